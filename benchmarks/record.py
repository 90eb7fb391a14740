"""Turn a benchmark's raw rows (the --out JSONL of bench_ffn, bench_prefill, bench_decode) into the records of
docs/benchmarks.jsonl (docs/design.md §4: bench, case, metric, value, ideal, device, torch, commit, date).

    python3 -m benchmarks.record --bench ffn --commit e411e4f --date 2026-11-28 ffn.jsonl >> docs/benchmarks.jsonl

One record per measured quantity of a row: its time or throughput, and its speedup with the row's ideal beside
it (`ideal`, `ideal_bytes` or `ideal_flops`). The case names everything else in the row.
"""

import argparse
import json
import sys

MEASURED = ("ms", "tokens_per_s", "speedup", "hbm", "kernels", "gpu_busy_ms", "gemm_ms")
IDEALS = ("ideal", "ideal_bytes", "ideal_flops")
NOT_CASE = {
    *MEASURED,
    *IDEALS,
    "ideal_bytes_kv",
    "top",
    "weight_bytes_ms",
    "of_ideal",
    "dense_ms",
    "tflops",
    "graphs_speedup",
    "duollm_over_hf",
    "device",
    "torch",
    "tb_s",
    "max_abs_err",
}

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("raw")
p.add_argument("--bench", required=True)
p.add_argument("--commit", required=True)
p.add_argument("--date", required=True)
args = p.parse_args()
for line in open(args.raw):
    row = json.loads(line)
    case = " ".join(f"{k}={v}" for k, v in row.items() if k not in NOT_CASE)
    ideal = next((row[k] for k in IDEALS if row.get(k) is not None), None)
    for metric in MEASURED:
        if metric in row:
            rec = {
                "bench": args.bench,
                "case": case,
                "metric": metric,
                "value": row[metric],
                "ideal": ideal if metric == "speedup" else None,
            }
            rec.update(device=row["device"], torch=row["torch"], commit=args.commit, date=args.date)
            sys.stdout.write(json.dumps(rec) + "\n")

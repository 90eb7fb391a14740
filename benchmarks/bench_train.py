"""Stage-1 training throughput of a preset, through the same `train()` that `duollm train` runs, for several
routing mixes in one process (the dense model first: all BIG, which runs each big module on every token).

    python3 -m benchmarks.bench_train --preset gpt2-124m --steps 150 [--cases dense=1,0,0;random=0.5,0.5,0]
        [--out-jsonl FILE] [--a.b=value ...]

A case is `name=p_big,p_small,p_skip`, or `name=p_big,p_small,p_skip,exact` for routes with exact counts per layer
(`--train.exact_counts`: handed to the model, so a compiled model runs the sorted path at fixed shapes). Prints one markdown row per case and the routed/dense speed ratio beside
its FLOP ideal (the ratio of counted FLOPs per token, routing/cost.py), and appends one JSON object per metric
(tokens/s, achieved TFLOP/s, MFU against the H200's 790 TFLOP/s dense bf16) to --out-jsonl (default
docs/benchmarks.jsonl). Throughput is the mean of the logged windows after the first (which holds start-up,
warm-up and compilation). Run directories are temporary.
"""

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from duollm.config import apply_overrides
from duollm.presets import run_config
from duollm.train.loop import read_metrics, train

PEAK_TFLOPS = {"H200": 790.0, "H100": 790.0}

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="gpt2-124m")
p.add_argument("--steps", type=int, default=300)
p.add_argument("--out-jsonl", default="docs/benchmarks.jsonl")
p.add_argument("--cases", default="dense=1,0,0;random=0.5,0.5,0")
args, rest = p.parse_known_args()
overrides = dict(a[2:].split("=", 1) for a in rest)
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
peak = next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
date = datetime.date.today().isoformat()
results, per_token_flops = {}, {}
for spec in args.cases.split(";"):
    name, probs = spec.split("=")
    pb, ps, pk, *how = probs.split(",")
    if how not in ([], ["exact"]):
        sys.exit(f"bench_train: a case is name=p_big,p_small,p_skip[,exact], got {spec!r}")
    case_over = {"train.steps": args.steps, "train.ckpt_every": 0, "train.p_big": pb, "train.p_small": ps, "train.p_skip": pk}
    case_over = {**case_over, "train.exact_counts": how == ["exact"], **overrides}
    cfg = apply_overrides(run_config(args.preset), case_over)
    with tempfile.TemporaryDirectory() as tmp:
        res = train(cfg, Path(tmp) / "run", progress=False)
        m = read_metrics(Path(tmp) / "run" / "metrics.jsonl")
    steady = m[1:] or m
    tps = sum(r["tokens_per_s"] for r in steady) / len(steady)
    tflops = sum(r["tflops"] for r in steady) / len(steady)
    results[name] = (tps, tflops)
    table = cfg.model.cost(cfg.train.seq_len)  # expected forward FLOPs per token under the mix
    mix = torch.tensor([float(pk), float(ps), float(pb)], dtype=torch.float64)  # indexed by Choice
    per_token_flops[name] = float(table.attn.sum() + table.head + (table.ffn * mix).sum())
    tc = cfg.train
    case = f"{args.preset} {name} p=big{tc.p_big}/small{tc.p_small}/skip{tc.p_skip} B={tc.batch_size}x{tc.grad_accum} T={tc.seq_len} {tc.dtype}"
    case += f" kernel={cfg.model.kernel}" + (" compiled" if tc.compile else "") + (" exact-counts" if tc.exact_counts else "")
    rows = [("tokens_per_s", round(tps, 1), None), ("model_tflops", round(tflops, 2), None)]
    if peak:
        rows.append(("mfu", round(tflops / peak, 4), None))
    if name != next(iter(results)):  # against the first case, in the same process
        d_tps, d_tflops = next(iter(results.values()))
        ideal = per_token_flops[next(iter(results))] / per_token_flops[name]  # counted FLOPs per token, first over this case
        rows.append(("speedup_vs_first", round(tps / d_tps, 3), round(ideal, 3)))
    with open(args.out_jsonl, "a") as f:
        for metric, value, ideal in rows:
            rec = {"bench": "train", "case": case, "metric": metric, "value": value, "ideal": ideal, "device": device}
            rec.update(torch=torch.__version__, commit=commit, date=date)
            f.write(json.dumps(rec) + "\n")
    mfu = f" | MFU {tflops / peak:.1%}" if peak else ""
    extra = f" | {rows[-1][1]:.3f}× of first (ideal {rows[-1][2]:.3f}×)" if rows[-1][0] == "speedup_vs_first" else ""
    print(
        f"| {case} | {tps:,.0f} tok/s | {tflops:.1f} TFLOP/s{mfu} | final loss {res['final_loss']:.3f}{extra} | {device} | torch {torch.__version__} |"
    )
    print(json.dumps(res), file=sys.stderr, flush=True)

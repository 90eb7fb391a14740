"""Stage-1 training throughput of a preset, through the same `train()` that `duollm train` runs.

    python benchmarks/bench_train.py --preset gpt2-124m --steps 300 [--out-jsonl FILE] [--a.b=value ...]

Prints one markdown row and appends one JSON object per metric (tokens/s, achieved TFLOP/s, MFU against the
H200's 790 TFLOP/s dense bf16) to --out-jsonl (default docs/benchmarks.jsonl). Throughput is the mean of the
logged windows after the first (which holds start-up and warm-up). The run directory is temporary.
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
args, rest = p.parse_known_args()
overrides = dict(a[2:].split("=", 1) for a in rest)
cfg = apply_overrides(run_config(args.preset), {"train.steps": args.steps, "train.ckpt_every": 0, **overrides})
with tempfile.TemporaryDirectory() as tmp:
    res = train(cfg, Path(tmp) / "run", progress=False)
    m = read_metrics(Path(tmp) / "run" / "metrics.jsonl")
steady = m[1:] or m
tps = sum(r["tokens_per_s"] for r in steady) / len(steady)
tflops = sum(r["tflops"] for r in steady) / len(steady)
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
peak = next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
tc = cfg.train
case = f"{args.preset} p=big{tc.p_big}/small{tc.p_small}/skip{tc.p_skip} B={tc.batch_size}x{tc.grad_accum} T={tc.seq_len} {tc.dtype}"
rows = [("tokens_per_s", round(tps, 1)), ("model_tflops", round(tflops, 2))]
if peak:
    rows.append(("mfu", round(tflops / peak, 4)))
date = datetime.date.today().isoformat()
with open(args.out_jsonl, "a") as f:
    for metric, value in rows:
        rec = {
            "bench": "train",
            "case": case,
            "metric": metric,
            "value": value,
            "ideal": None,
            "device": device,
            "torch": torch.__version__,
            "commit": commit,
            "date": date,
        }
        f.write(json.dumps(rec) + "\n")
print(
    f"| {case} | {tps:,.0f} tok/s | {tflops:.1f} TFLOP/s | MFU {tflops / peak:.1%} | final loss {res['final_loss']:.3f} | {device} | torch {torch.__version__} |"
    if peak
    else f"| {case} | {tps:,.0f} tok/s | {tflops:.2f} TFLOP/s | {device} |"
)
print(json.dumps(res), file=sys.stderr)

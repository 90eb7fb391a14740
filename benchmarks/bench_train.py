"""Stage-1 training throughput of a preset, through the same `train()` that `duollm train` runs, for several
routing mixes in one process (the dense model first: all BIG, which runs each big module on every token).

    python3 -m benchmarks.bench_train --preset gpt2-124m --steps 150 [--cases dense=1,0,0;random=0.5,0.5,0]
        [--out-jsonl FILE] [--a.b=value ...]

A case is `name=p_big,p_small,p_skip`, or `name=p_big,p_small,p_skip,exact` for routes with exact counts per layer
(`--train.exact_counts`: handed to the model, so a compiled model runs the sorted path at fixed shapes). Prints one markdown row per case and the routed/dense speed ratio beside
its FLOP ideal (the ratio of counted FLOPs per token, routing/cost.py), and appends one JSON object per metric
(tokens/s, achieved TFLOP/s, MFU against the H200's 790 TFLOP/s dense bf16) to --out-jsonl (default
docs/benchmarks.jsonl). Throughput is the mean of the logged windows after the first (which holds start-up, warm-up
and compilation). With --profile each case is trained again for a few steps under the profiler: wall time and kernel
time per step, the share of the step the device idles, and the eight costliest kernels (`profile_case`). Run
directories are temporary.
"""

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
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
p.add_argument("--profile", action="store_true", help="also profile each case: PROFILE_STEPS steps after WAIT (compilation)")
args, rest = p.parse_known_args()
overrides = dict(a[2:].split("=", 1) for a in rest)
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
peak = next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
date = datetime.date.today().isoformat()
WAIT, WARMUP, PROFILE_STEPS = 4, 1, 3  # the profiled training's steps: compilation and warm-up, then those measured


def profile_case(cfg) -> dict:
    """Where a training step's time goes: a fresh run of WAIT + WARMUP + PROFILE_STEPS steps, the last ones under the
    profiler. Per step: wall time (`step_ms`), the device's kernel time (`gpu_busy_ms`), the share of the wall time
    the device is idle (`gpu_idle_share`: host work it waits for, such as a route drawn and copied on the host), and
    the eight costliest kernels [name, calls, ms per step]. On a CPU the host's operators stand in for kernels."""
    from torch.profiler import ProfilerActivity, profile, schedule

    steps = WAIT + WARMUP + PROFILE_STEPS
    cfg = apply_overrides(cfg, {"train.steps": steps, "train.log_every": steps})
    cuda = torch.cuda.is_available()
    acts = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]  # the kernels alone (CPU ops would count them twice)
    marks: list[float] = []

    def on_step(step: int) -> None:  # the window's two ends wait for the device; the steps inside overlap as in training
        if step in (WAIT + WARMUP, steps):
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
        prof.step()

    with profile(activities=acts, schedule=schedule(wait=WAIT, warmup=WARMUP, active=PROFILE_STEPS)) as prof:
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp) / "run", progress=False, on_step=on_step)
    busy = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    ops = [e for e in prof.key_averages() if busy(e) > 0 and not e.key.startswith("ProfilerStep")]  # not the step ranges
    step_ms = (marks[1] - marks[0]) / PROFILE_STEPS * 1e3  # the profiled steps' wall time
    busy_ms = sum(busy(e) for e in ops) / 1e3 / PROFILE_STEPS
    top = sorted(ops, key=lambda e: -busy(e))[:8]
    return {
        "step_ms": round(step_ms, 2),
        "gpu_busy_ms": round(busy_ms, 2),
        "gpu_idle_share": round(max(0.0, 1 - busy_ms / step_ms), 3) if cuda else None,
        "top": [[e.key[:70], e.count // PROFILE_STEPS, round(busy(e) / 1e3 / PROFILE_STEPS, 3)] for e in top],
    }


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
    if args.profile:
        prof = profile_case(cfg)
        print(json.dumps({"profile": name, **prof}), flush=True)
        with open(args.out_jsonl, "a") as f:
            for metric in [m for m in ("step_ms", "gpu_busy_ms", "gpu_idle_share") if prof[m] is not None]:
                rec = {"bench": "train", "case": case + " profiled", "metric": metric, "value": prof[metric], "ideal": None}
                rec.update(device=device, torch=torch.__version__, commit=commit, date=date)
                if metric == "gpu_busy_ms":
                    rec["top"] = prof["top"]
                f.write(json.dumps(rec) + "\n")

"""Decode throughput of `model/generate.py`: tokens/s per batch size, routed against all-big, in one process.

    python3 -m benchmarks.bench_decode --preset paper-1.4b --batches 1,8,64,256 --new 64 --out decode.jsonl

Random weights, a prompt of `--prompt-len` random tokens per sequence, greedy decoding of `--new` tokens.
Policies: all-big, and a static route with k of 12 layers BIG (the rest SMALL) for each k in `--ks`. Reports
new tokens per second (prefill excluded) and the ideal ratio to all-big from the weight bytes each token's
FFNs read (batch 1 is bound by them) and from FLOPs (large batches). This is the eager reference path: no
CUDA graphs yet (issue 5), so small batches are launch-bound.
"""

import argparse
import json

import torch

from benchmarks.timing import DEVICE, timed
from duollm.model.generate import generate
from duollm.model.transformer import DuoLM
from duollm.presets import model_config
from duollm.routing.cost import route_cost

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="paper-1.4b")
p.add_argument("--batches", default="1,8,64,256")
p.add_argument("--prompt-len", type=int, default=128)
p.add_argument("--new", type=int, default=64)
p.add_argument("--ks", default="4,6,8")
p.add_argument("--out", default="bench_decode.jsonl")
args = p.parse_args()

dev = DEVICE
dtype = torch.bfloat16 if dev == "cuda" else torch.float32
cfg = model_config(args.preset)
torch.manual_seed(0)
model = DuoLM(cfg).to(dev, dtype).eval()
L = cfg.n_layer
table = cfg.cost(args.prompt_len + args.new)
policies = {"all-big": torch.full((L,), 2, dtype=torch.uint8)}
for k in (int(v) for v in args.ks.split(",")):
    policies[f"{k}/{L} big"] = torch.tensor([2] * k + [1] * (L - k), dtype=torch.uint8)
weights = {name: float(table.ffn_params[torch.arange(L), r.long()].sum()) for name, r in policies.items()}
flops = {name: float(route_cost(r, table)) for name, r in policies.items()}
rows = []
for B in (int(b) for b in args.batches.split(",")):
    ids = torch.randint(0, cfg.vocab_size, (B, args.prompt_len), device=dev)
    for name, route in policies.items():
        generate(model, ids[:, :8], 2, route=route)  # warm-up
        prefill, _ = timed(lambda ids=ids, route=route: generate(model, ids, 1, route=route))  # subtracted below
        total, _ = timed(lambda ids=ids, route=route: generate(model, ids, args.new, route=route))
        tps = B * (args.new - 1) / max(1e-9, total - prefill)
        rec = {"preset": args.preset, "batch": B, "policy": name, "tokens_per_s": round(tps, 1)}
        rec.update(ideal_bytes=round(weights["all-big"] / weights[name], 3), ideal_flops=round(flops["all-big"] / flops[name], 3))
        rec.update(device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", torch=torch.__version__)
        rows.append(rec)
        print(json.dumps(rec), flush=True)
with open(args.out, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)

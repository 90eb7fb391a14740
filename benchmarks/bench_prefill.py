"""End-to-end prefill (one forward with logits, no grad) of a preset with random weights: routed against all-big
and against the Hugging Face `LlamaForCausalLM` of the same dimensions, in one process.

    python3 -m benchmarks.bench_prefill --preset paper-1.4b --batch 16 --seq-len 1024 --out prefill.jsonl

Policies: all-big; for each k in `--ks`, a static route (the first k layers BIG, the rest SMALL, the same for
every token) and per-token routes (each token its own k BIG layers, drawn at random; every layer then sees
a k/12 mix), the latter through each per-token path (`--kernels`: sorted, grouped, reference). The ideal
speedup over all-big is the ratio of counted FLOPs (routing/cost.py: attention, the modules, the head); the
HF model is the dense all-big reference (SDPA, tied head, bf16). Median of `--iters` runs after warm-up.
"""

import argparse
import json
import statistics

import torch

from benchmarks.timing import DEVICE, hf_llama, timed
from duollm.model.transformer import DuoLM
from duollm.presets import model_config
from duollm.routing.budget import Budget
from duollm.routing.cost import route_cost
from duollm.routing.route import Choice

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="paper-1.4b")
p.add_argument("--batch", type=int, default=16)
p.add_argument("--seq-len", type=int, default=1024)
p.add_argument("--ks", default="4,6,8")
p.add_argument("--kernels", default="sorted,grouped,reference")
p.add_argument("--iters", type=int, default=10)
p.add_argument("--hf", action=argparse.BooleanOptionalAction, default=True, help="time transformers' Llama too")
p.add_argument("--profile", action="store_true", help="print the top CUDA ops of all-big and the first static route")
p.add_argument("--out", default="bench_prefill.jsonl")
args = p.parse_args()

dev = DEVICE
dtype = torch.bfloat16 if dev == "cuda" else torch.float32
cfg = model_config(args.preset)
B, T, L = args.batch, args.seq_len, cfg.n_layer
torch.manual_seed(0)
model = DuoLM(cfg).to(dev, dtype).eval()
table = cfg.cost(T)
ids = torch.randint(0, cfg.vocab_size, (B, T), device=dev)
all_big = torch.full((L,), Choice.BIG, dtype=torch.uint8)
base_flops = float(route_cost(all_big, table))
rows: list[dict] = []


def clock(fn) -> float:
    with torch.no_grad():
        for _ in range(2):
            fn()
        return statistics.median(timed(fn)[0] for _ in range(args.iters))


def record(policy: str, impl: str, t: float, flops: float, base_t: float | None) -> None:
    rec = {"preset": args.preset, "batch": B, "seq_len": T, "policy": policy, "impl": impl, "ms": round(t * 1e3, 2)}
    rec.update(tokens_per_s=round(B * T / t), tflops=round(flops * B * T / t / 1e12, 1))
    if base_t is not None:
        ideal = base_flops / flops
        rec.update(speedup=round(base_t / t, 3), ideal=round(ideal, 3), of_ideal=round(base_t / t / ideal, 3))
    rec.update(device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", torch=torch.__version__)
    rows.append(rec)
    print(json.dumps(rec), flush=True)


if args.profile:
    from torch.profiler import ProfilerActivity, profile

    first = torch.tensor([Choice.BIG] * int(args.ks.split(",")[0]) + [Choice.SMALL] * L, dtype=torch.uint8)[:L]
    for name, route in (("all-big", all_big), ("static", first)):
        clock(lambda r=route: model(ids, route=r))
        with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(ids, route=route)
            torch.cuda.synchronize()
        print(f"--- profile: {name}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))
t_big = clock(lambda: model(ids, route=all_big))
record("all-big", "duollm", t_big, base_flops, t_big)
for k in (int(v) for v in args.ks.split(",")):
    static = torch.tensor([Choice.BIG] * k + [Choice.SMALL] * (L - k), dtype=torch.uint8)
    flops = float(route_cost(static, table))
    record(f"{k}/{L} static", "duollm", clock(lambda r=static: model(ids, route=r)), flops, t_big)
    routes = Budget.exactly_big(k).routes(L)  # (R, L)
    pick = torch.randint(0, len(routes), (B, T), generator=torch.Generator().manual_seed(k))
    per_token = routes[pick].to(dev)  # (B, T, L), exactly k BIG per token
    for kernel in args.kernels.split(","):
        for block in model.blocks:
            block.ffn.kernel = kernel
        record(f"{k}/{L} per-token", kernel, clock(lambda r=per_token: model(ids, route=r)), flops, t_big)
    for block in model.blocks:
        block.ffn.kernel = cfg.kernel

if args.hf:
    hf = hf_llama(cfg, dtype)
    record("all-big (dense Llama)", "hf", clock(lambda: hf(ids, use_cache=False).logits), base_flops, t_big)
with open(args.out, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)

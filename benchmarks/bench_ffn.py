"""One routed FFN layer against the dense big FFN and naive masked execution, in one process.

    python3 -m benchmarks.bench_ffn --preset paper-1.4b --tokens 4096,16384,65536 --out ffn.jsonl

For each token count and routing mix (all-big, all-small, all-skip, and k/12 of the choices BIG with the
rest SMALL for k = 4, 6, 8, drawn per token): the time of
  dense    the big module on every token (what a dense model runs),
  naive    both modules on every token, then a per-token select (FLOPs = dense + small),
  ref      duollm's reference `RoutedFFN` (per choice: nonzero, gather the rows, run, scatter back),
  sorted   kernels/sorted.py (one device sort, one gather, exact-size matmuls, in-place scatter; one host read),
  counted  the same with the counts handed over (a route drawn on the host, as training draws it): no host read,
  grouped  kernels/grouped.py (sorted on the device, `torch._grouped_mm` with device offsets, no host sync),
  fused    kernels/triton_ffn.py (Triton: gather, SwiGLU and scatter fused into the matmuls; where it can run),
  bound    the modules alone on contiguous rows of the mix's counts (no routing work: what a perfect
           gather/scatter would cost),
and the ideal speedup over dense from the counted FLOPs (routing/cost.py), with the fraction of it reached.
Forward only, bf16 on a GPU (fp32 on a CPU, where it only checks that it runs). Median of `--iters` timed
runs after warm-up. Faster paths (a fused Triton kernel) join this table as more rows.
"""

import argparse
import json
import statistics

import torch

from benchmarks.timing import DEVICE, sync, timed
from duollm import kernels
from duollm.kernels.grouped import routed_ffn_grouped
from duollm.kernels.masked import routed_ffn_masked
from duollm.kernels.sorted import routed_ffn_sorted
from duollm.model.ffn import RoutedFFN
from duollm.presets import model_config
from duollm.routing.route import Choice

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="paper-1.4b")
p.add_argument("--tokens", default="4096,16384,65536")
p.add_argument("--iters", type=int, default=20)
p.add_argument("--profile", action="store_true", help="print the GPU ops of the sorted and counted paths at the first size, 4/12 big")
p.add_argument("--out", default="bench_ffn.jsonl")
args = p.parse_args()

dev = DEVICE
dtype = torch.bfloat16 if dev == "cuda" else torch.float32
cfg = model_config(args.preset)
torch.manual_seed(0)
ffn = RoutedFFN(cfg.d_model, cfg.d_small, cfg.d_big, kernel="reference").to(dev, dtype)
MIXES = {"all-big": (1.0, 0.0), "all-small": (0.0, 1.0), "all-skip": (0.0, 0.0), **{f"{k}/12 big": (k / 12, 1 - k / 12) for k in (4, 6, 8)}}
flops = {Choice.BIG: 6 * cfg.d_model * cfg.d_big, Choice.SMALL: 6 * cfg.d_model * cfg.d_small, Choice.SKIP: 0}


def clock(fn) -> float:
    for _ in range(3):
        fn()
    return statistics.median(timed(fn)[0] for _ in range(args.iters))


rows = []
with torch.no_grad():
    for N in (int(t) for t in args.tokens.split(",")):
        u = torch.randn(1, N, cfg.d_model, device=dev, dtype=dtype)
        t_dense = clock(lambda u=u: ffn.big(u))
        for mix, (pb, ps) in MIXES.items():
            probs = torch.tensor([1 - pb - ps, ps, pb])  # SKIP, SMALL, BIG
            choice = (
                torch.multinomial(probs, N, replacement=True, generator=torch.Generator().manual_seed(N)).to(torch.uint8).view(1, N).to(dev)
            )
            routed = sum(flops[c] * float((choice == c).sum()) for c in Choice)
            ideal = flops[Choice.BIG] * N / routed if routed else float("inf")
            impls = {"naive": lambda u=u, c=choice: routed_ffn_masked(u, c, ffn.small, ffn.big), "ref": lambda u=u, c=choice: ffn(u, c)}
            impls["sorted"] = lambda u=u, c=choice: routed_ffn_sorted(u, c, ffn.small, ffn.big)
            counts = tuple(int((choice == c).sum()) for c in (Choice.BIG, Choice.SMALL, Choice.SKIP))
            impls["counted"] = lambda u=u, c=choice, n=counts: routed_ffn_sorted(u, c, ffn.small, ffn.big, counts=n)
            impls["grouped"] = lambda u=u, c=choice: routed_ffn_grouped(u, c, ffn.small, ffn.big)
            if kernels.triton_usable(u):
                impls["fused"] = lambda u=u, c=choice: kernels.routed_ffn_fused(u, c, ffn.small, ffn.big)
            nb, ns = counts[:2]
            impls["bound"] = lambda u=u, nb=nb, ns=ns: (ffn.big(u[:, :nb]) if nb else None, ffn.small(u[:, :ns]) if ns else None)
            for name, fn in impls.items():
                t = clock(fn)
                rec = {
                    "preset": args.preset,
                    "tokens": N,
                    "mix": mix,
                    "impl": name,
                    "ms": round(t * 1e3, 3),
                    "dense_ms": round(t_dense * 1e3, 3),
                }
                rec.update(speedup=round(t_dense / t, 3), ideal=round(ideal, 3) if ideal != float("inf") else None)
                rec["of_ideal"] = round(rec["speedup"] / ideal, 3) if rec["ideal"] else None
                rec.update(device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", torch=torch.__version__)
                rows.append(rec)
                print(json.dumps(rec), flush=True)
if args.profile:
    from torch.profiler import ProfilerActivity, profile

    N = int(args.tokens.split(",")[0])
    u = torch.randn(1, N, cfg.d_model, device=dev, dtype=dtype)
    choice = torch.multinomial(torch.tensor([0.0, 8 / 12, 4 / 12]), N, replacement=True).to(torch.uint8).view(1, N).to(dev)
    counts = tuple(int((choice == c).sum()) for c in (Choice.BIG, Choice.SMALL, Choice.SKIP))
    for name, n in (("sorted", None), ("counted", counts)):
        with torch.no_grad():
            clock(lambda n=n: routed_ffn_sorted(u, choice, ffn.small, ffn.big, counts=n))
            with profile(activities=[ProfilerActivity.CUDA if dev == "cuda" else ProfilerActivity.CPU]) as prof:
                routed_ffn_sorted(u, choice, ffn.small, ffn.big, counts=n)
                sync()
        print(f"--- profile: {name}, {N} tokens, 4/12 big")
        key = "self_cuda_time_total" if dev == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))
with open(args.out, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)

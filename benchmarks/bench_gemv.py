"""One row times a weight matrix, the matrix products of a batch-1 decode step, at the memory's pace or not:
cuBLAS (`F.linear`), the same compiled (torch.compile, Inductor's choice), and the one-row kernels of
kernels/triton_decode.py (`gemv`; `glu` for gate and up, which also applies the SwiGLU), in one process.

    python3 -m benchmarks.bench_gemv --preset paper-1.4b --out gemv.jsonl

The matrices of one layer of the preset and its head (bf16): q/k/v fused, o, gate/up fused (`glu`: two matrices
read, one (F,) output), down, and the tied head. Each timed by `triton.testing.do_bench`, which empties the L2
cache before every call (a step of the whole model reads 2.68 GB at paper-1.4b, so no matrix is found in L2 when a
step comes back to it). `tb_s`: the matrix's bytes over the time; `hbm`: that as a share of 4.8 TB/s (an H200);
`speedup`: against cuBLAS. The ideal of each is its bytes at the memory's bandwidth (hbm 1.0).
"""

import argparse
import json

import torch
import torch.nn.functional as F

from benchmarks.timing import DEVICE
from duollm.presets import model_config

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="paper-1.4b")
p.add_argument("--out", default="bench_gemv.jsonl")
args = p.parse_args()
if DEVICE != "cuda":
    raise SystemExit("bench_gemv needs a GPU (the one-row kernels are Triton's)")

import triton.testing  # noqa: E402  (a GPU machine: Triton is there)

from duollm.kernels.triton_decode import gemv, glu  # noqa: E402

cfg = model_config(args.preset)
C, hs = cfg.d_model, cfg.d_model // cfg.n_head
dt = torch.bfloat16
torch.manual_seed(0)
shapes = {
    "qkv": (cfg.n_head * hs + 2 * cfg.n_kv_head * hs, C),
    "o": (C, cfg.n_head * hs),
    "gate_up": (2 * cfg.d_big, C),
    "down": (C, cfg.d_big),
    "small gate_up": (2 * cfg.d_small, C),
    "small down": (C, cfg.d_small),
    "head": (cfg.vocab_size, C),
}
peak = 4.8e12 if "H200" in torch.cuda.get_device_name() else None
compiled = torch.compile(lambda x, w: F.linear(x, w), fullgraph=True, dynamic=False)
rows = []
for name, (N, K) in shapes.items():
    w = torch.randn(N, K, device="cuda", dtype=dt) / K**0.5
    x = torch.randn(1, K, device="cuda", dtype=dt)
    if name.endswith("gate_up"):  # the fused matrix's two halves through one kernel, SwiGLU applied
        wg, wu = w.chunk(2)
        ours = lambda x=x, wg=wg, wu=wu: glu(x, wg, wu)  # noqa: E731
        ref = (F.silu(F.linear(x, wg).float()) * F.linear(x, wu).float()).to(dt)
    else:
        ours = lambda x=x, w=w: gemv(x, w)  # noqa: E731
        ref = F.linear(x, w)
    err = float((ours().float() - ref.float()).abs().max())  # the first call tunes the tiles
    runs = {"cublas": lambda x=x, w=w: F.linear(x, w), "compiled": lambda x=x, w=w: compiled(x, w), "one-row": ours}
    base = None
    for impl, fn in runs.items():
        fn()
        ms = triton.testing.do_bench(fn, warmup=25, rep=200)
        base = ms if impl == "cublas" else base
        row = {"matrix": name, "shape": [N, K], "impl": impl, "ms": round(ms, 5), "tb_s": round(N * K * 2 / ms / 1e9, 3)}
        row.update(speedup=round(base / ms, 3), ideal=round(base / (N * K * 2 / peak * 1e3), 3) if peak else None)
        if peak:
            row.update(hbm=round(N * K * 2 / ms / 1e9 / peak * 1e12, 3))
        if impl == "one-row":
            row.update(max_abs_err=round(err, 5))
        row.update(device=torch.cuda.get_device_name(), torch=torch.__version__)
        rows.append(row)
        print(json.dumps(row), flush=True)
with open(args.out, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)

"""The routed FFN as two Triton kernels per module, gather and scatter fused into the matmuls (forward only).

Readable reference: `model/ffn.py` `RoutedFFN`. The sorted path (kernels/sorted.py) spends, besides its
matmuls, a host read of the counts, a device sort, a gather of the routed rows, the SiLU and product passes
over the hidden activations and a scatter back; at 16k tokens of the paper's shape those are a quarter of
its time, and at gpt2-124m width they cost more than routing saves (docs/benchmarks.md, profiles). Here
(docs/speed.md, "The fast paths"):

1. On the device, as in kernels/grouped.py: key = BIG→0, SMALL→1, SKIP→2; `perm`, a stable sort of the keys;
   `bounds` = (0, n_big, n_big + n_small), the running counts. Nothing is read on the host.
2. `_up`, per module: a program owns BM sorted rows × BN hidden columns; it stops at once when its rows lie
   past the module's count (the grid is sized for the worst case, every row). It loads its rows of x through
   `perm` (the gather, in the prologue), accumulates x·W_gateᵀ and x·W_upᵀ, and stores silu(g)·u (the
   activation, in the epilogue) into h at the rows' sorted positions.
3. `_down`, per module: h·W_downᵀ for the same rows, stored at the rows' tokens (the scatter, in the
   epilogue) into a zero tensor: skipped tokens are never read and stay zero.

Each token chooses at most one module, so the stores never collide. The matmuls accumulate in fp32 and round
once, like the reference's per-module linear layers up to the order of summation. No autograd: training runs
the sorted or grouped path (`kernels.choose`). Needs Triton and a CUDA device (`usable`).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from duollm.routing.route import Choice

CONFIGS = [
    triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in ((128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 256, 64, 8, 3), (64, 64, 64, 4, 4))
]
if os.environ.get("TRITON_INTERPRET") == "1":  # Triton's CPU interpreter (the tests): one tile shape, no tuning
    CONFIGS = [triton.Config({"BM": 16, "BN": 16, "BK": 16})]


@triton.autotune(configs=CONFIGS, key=["C", "F"])
@triton.jit
def _up(x, perm, bounds, wg, wu, h, N, C, F, m: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    start, end = tl.load(bounds + m), tl.load(bounds + m + 1)  # this module's sorted rows: [start, end)
    rows = start + tl.program_id(0) * BM + tl.arange(0, BM)
    if start + tl.program_id(0) * BM >= end:
        return
    rmask = rows < end
    tok = tl.load(perm + rows, mask=rmask, other=0)  # the gather: which token each row is
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    cmask = cols < F
    acc_g = tl.zeros((BM, BN), dtype=tl.float32)
    acc_u = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, C, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < C
        a = tl.load(x + tok[:, None] * C + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)  # (BM, BK)
        bmask = kmask[:, None] & cmask[None, :]
        g = tl.load(wg + cols[None, :] * C + ks[:, None], mask=bmask, other=0.0)  # (BK, BN) = W_gateᵀ tile
        u = tl.load(wu + cols[None, :] * C + ks[:, None], mask=bmask, other=0.0)
        acc_g = tl.dot(a, g, acc_g)
        acc_u = tl.dot(a, u, acc_u)
    hval = acc_g * tl.sigmoid(acc_g) * acc_u  # SwiGLU, in fp32
    dst = h + (rows - start)[:, None] * F + cols[None, :]
    tl.store(dst, hval.to(h.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


@triton.autotune(configs=CONFIGS, key=["C", "F"])
@triton.jit
def _down(h, perm, bounds, wd, out, N, C, F, m: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    start, end = tl.load(bounds + m), tl.load(bounds + m + 1)
    rows = start + tl.program_id(0) * BM + tl.arange(0, BM)
    if start + tl.program_id(0) * BM >= end:
        return
    rmask = rows < end
    tok = tl.load(perm + rows, mask=rmask, other=0)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)  # output columns (C)
    cmask = cols < C
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, F, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < F
        a = tl.load(h + (rows - start)[:, None] * F + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
        b = tl.load(wd + cols[None, :] * F + ks[:, None], mask=kmask[:, None] & cmask[None, :], other=0.0)  # W_downᵀ
        acc = tl.dot(a, b, acc)
    tl.store(out + tok[:, None] * C + cols[None, :], acc.to(out.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


def routed_ffn_fused(u: Tensor, choice: Tensor, small, big) -> Tensor:
    """Same result as `RoutedFFN(u, choice)` for per-token choices (B, T) uint8, without autograd: (B, T, C)."""
    B, T, C = u.shape
    N = B * T
    x = u.reshape(N, C).contiguous()
    key = Choice.BIG - choice.reshape(N).long()  # (N,) BIG→0, SMALL→1, SKIP→2
    perm = torch.argsort(key, stable=True)  # (N,) big rows, then small, then skip
    counts = (key[:, None] == torch.arange(3, device=u.device)).sum(0)  # (3,) on the device
    bounds = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # (0, n_big, n_big + n_small, N)
    out = torch.zeros_like(x)  # skipped tokens stay zero
    for m, module in enumerate((big, small)):  # m indexes bounds: big rows [b0, b1), small rows [b1, b2)
        F = module.gate.weight.shape[0]
        h = x.new_empty(N, F)  # the worst case; a module writes its first n_m rows
        grid = lambda meta, F=F: (triton.cdiv(N, meta["BM"]), triton.cdiv(F, meta["BN"]))  # noqa: E731
        # row-major weights, as the kernels index them: a copy only under autocast, or for SMALL viewing BIG's down columns
        wg, wu, wd = (lin.weight.to(x.dtype).contiguous() for lin in (module.gate, module.up, module.down))
        _up[grid](x, perm, bounds, wg, wu, h, N, C, F, m)
        grid = lambda meta: (triton.cdiv(N, meta["BM"]), triton.cdiv(C, meta["BN"]))  # noqa: E731
        _down[grid](h, perm, bounds, wd, out, N, C, F, m)
    return out.view(B, T, C)

"""A routed FFN without host synchronisation: tokens sorted by choice on the device, modules run through
`torch._grouped_mm` with the row counts as device-side offsets (docs/speed.md, "The fast paths").

Readable reference: `model/ffn.py` `RoutedFFN` (nonzero → gather → module → scatter), which reads each
module's token count on the host once per layer. Here nothing leaves the device, and every shape is static
(N = B·T rows), so the layer can be captured in a CUDA graph or compiled without recompiles:

1. key = BIG→0, SMALL→1, SKIP→2 per token; `perm` = a stable sort of the keys; counts and their running
   ends (n_big, n_big + n_small) are computed with comparisons and sums (no `bincount`, which syncs on CUDA).
2. xs = the rows in sorted order, (N, C). The big module runs on rows [0, n_big) — a grouped GEMM with one
   group ending at n_big; the small module on rows [0, n_big + n_small), its input zeroed on the big rows.
   `_grouped_mm` leaves garbage in the output rows past the last offset and in their input gradient, so the
   inputs are masked to the module's own rows (no garbage gradient can reach another token) and the
   outputs are selected row by row.
3. The result goes back to token order through the inverse permutation; skipped tokens get zeros.

Cost against the ideal: the small module also runs on the n_big rows of big tokens (with zero input), at
most d_small/d_big of the big work (1/16 for the presets); the masks, the sort and the two permutations
are memory passes over (N, C). A fused Triton kernel (gather in the prologue, scatter in the epilogue)
removes those passes; this path is the first, simplest step and the correctness reference for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from duollm.routing.route import Choice


def available() -> bool:
    return hasattr(torch, "_grouped_mm")


def usable(u: Tensor) -> bool:
    """On a GPU `_grouped_mm` takes bf16 only: use this path for bf16 activations or under bf16 autocast (the
    matmuls then run in bf16, as autocast would run them); fp32 on a GPU stays on the reference path."""
    if not available():
        return False
    if not u.is_cuda:
        return True
    return u.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16)


def _mm(x: Tensor, w: Tensor, end: Tensor) -> Tensor:
    """x (N, K) @ w.T for rows [0, end) (w: nn.Linear weight (M, K)); rows past `end` are undefined."""
    if x.is_cuda:
        x, w = x.to(torch.bfloat16), w.to(torch.bfloat16)
    return torch._grouped_mm(x, w.t().unsqueeze(0), offs=end.reshape(1))


def _swiglu(x: Tensor, module, end: Tensor) -> Tensor:
    h = F.silu(_mm(x, module.gate.weight, end)) * _mm(x, module.up.weight, end)  # (N, d_ff)
    return _mm(h, module.down.weight, end)  # (N, C)


def routed_ffn_grouped(u: Tensor, choice: Tensor, small, big) -> Tensor:
    """Same result as `RoutedFFN(u, choice)` for per-token choices (B, T) uint8; no host sync."""
    B, T, C = u.shape
    N = B * T
    key = Choice.BIG - choice.reshape(N).long()  # (N,) BIG→0, SMALL→1, SKIP→2
    perm = torch.argsort(key, stable=True)  # (N,) big rows first, then small, then skip
    counts = (key[:, None] == torch.arange(3, device=u.device)).sum(0)  # (3,) on the device
    ends = counts.cumsum(0).to(torch.int32)  # n_big, n_big + n_small, N
    row = torch.arange(N, device=u.device)[:, None]  # (N, 1)
    is_big, is_small = row < ends[0], (row >= ends[0]) & (row < ends[1])  # (N, 1) each
    xs = u.reshape(N, C).index_select(0, perm)  # (N, C) sorted rows
    zero = xs.new_zeros(())
    yb = _swiglu(torch.where(is_big, xs, zero), big, ends[0])
    ys = _swiglu(torch.where(is_small, xs, zero), small, ends[1])
    y = torch.where(is_big, yb, torch.where(is_small, ys, zero))  # (N, C) sorted; skip rows zero
    return y.index_select(0, torch.argsort(perm)).view(B, T, C)  # back to token order

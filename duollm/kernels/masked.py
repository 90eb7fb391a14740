"""The routed FFN as masked execution: both modules run on every token and each token keeps its own module's
output (or zero). It spends the FLOPs of both modules on every token and reads both modules' weights, so it
saves nothing; what it has is no sort, no gather and no host read. That is what a decode step inside a CUDA
graph wants at small batch (docs/speed.md, "Decoding"): a handful of rows, where sorting and the grouped
kernels cost more than the extra rows. Readable reference: `model/ffn.py` `RoutedFFN`.

With SMALL a view of BIG's first neurons (`DuoConfig.small_view`), one pass over BIG serves every row: each token's
inner activations are cut to its choice's width (d_big, d_small or 0) before the down projection, so a step costs
all-BIG's bytes and FLOPs exactly, never more. At batch 64 of mixed per-token routes every module is chosen by some
row anyway, and this matches all-BIG where the decode kernel (kernels/triton_decode.py), which reads only the
chosen modules, runs its matrix products below cuBLAS's speed (docs/speed.md, "Decoding").
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.routing.route import Choice


def routed_ffn_masked(u: Tensor, choice: Tensor, small, big) -> Tensor:
    """Same result as `RoutedFFN(u, choice)` for per-token choices (B, T) uint8: (B, T, C)."""
    c = choice[..., None]  # (B, T, 1)
    BIG, SMALL = int(Choice.BIG), int(Choice.SMALL)  # plain ints: torch.compile compares a tensor with them, not with an enum
    if getattr(small.gate, "owner", None) is big:  # SMALL is BIG's first neurons (SmallView): one pass over BIG
        h = big.hidden(u)  # (B, T, F): every token through BIG's gate and up
        width = torch.where(c == BIG, h.shape[-1], torch.where(c == SMALL, small.gate.n, 0))  # (B, T, 1)
        keep = torch.arange(h.shape[-1], device=u.device) < width  # (B, T, F): the neurons of the token's choice
        return big.down(torch.where(keep, h, 0.0))  # SMALL's sum is BIG's over its first neurons: all-BIG's cost exactly
    yb, ys = big(u), small(u)  # (B, T, C) each, every token
    return torch.where(c == BIG, yb, torch.where(c == SMALL, ys, torch.zeros((), dtype=yb.dtype, device=u.device)))

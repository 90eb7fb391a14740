"""The routed FFN as masked execution: both modules run on every token and each token keeps its own module's
output (or zero). It spends the FLOPs of both modules on every token and reads both modules' weights, so it
saves nothing; what it has is no sort, no gather and no host read. That is what a decode step inside a CUDA
graph wants at small batch (docs/speed.md, "Decoding"): a handful of rows, where sorting and the grouped
kernels cost more than the extra rows. Readable reference: `model/ffn.py` `RoutedFFN`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.routing.route import Choice


def routed_ffn_masked(u: Tensor, choice: Tensor, small, big) -> Tensor:
    """Same result as `RoutedFFN(u, choice)` for per-token choices (B, T) uint8: (B, T, C)."""
    c = choice[..., None]  # (B, T, 1)
    yb, ys = big(u), small(u)  # (B, T, C) each, every token
    big, small = int(Choice.BIG), int(Choice.SMALL)  # plain ints: torch.compile compares a tensor with them, not with an enum
    return torch.where(c == big, yb, torch.where(c == small, ys, torch.zeros((), dtype=yb.dtype, device=u.device)))

"""The FFN modules and the routed FFN, the readable reference dispatch (docs/design.md §2, §7.7, §7.10).

`SwiGLU` is the Llama FFN (Shazeer 2020, "GLU Variants Improve Transformer"): `down(silu(gate(u)) * up(u))`,
no biases. `RoutedFFN` holds the two modules of a layer, `small` and `big`, and sends each token through the
one its route chooses, or through neither (SKIP adds nothing to the residual stream). The per-token path
gathers the tokens of each choice, runs the module on those rows only and scatters the results back, so a
module never runs on a token that did not choose it. The fast GPU paths live in `kernels/` and must
match this one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from duollm import kernels
from duollm.routing.route import Choice


class SwiGLU(nn.Module):
    """One module: `d_model → d_ff → d_model`, three weight matrices, no bias."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:
        return self.down(nn.functional.silu(self.gate(u)) * self.up(u))  # (N, C)


class RoutedFFN(nn.Module):
    """A layer's `small` and `big` modules and the per-token choice between them (or neither)."""

    def __init__(self, d_model: int, d_small: int, d_big: int, kernel: str = "auto"):
        super().__init__()
        self.small = SwiGLU(d_model, d_small)
        self.big = SwiGLU(d_model, d_big)
        self.kernel = kernel  # per-token path: "reference" (below), "sorted", "grouped", "masked" (kernels/), "auto" (kernels.choose)

    def forward(self, u: Tensor, choice: Tensor) -> Tensor:
        """`u` (B, T, C) normalised input; `choice` a 0-d uint8 (one choice for all) or (B, T) uint8, or
        (B, T, 3) float weights over (SKIP, SMALL, BIG) for a soft mixture (a router in training).

        Returns the FFN's contribution to the residual stream, (B, T, C); zero where the choice is SKIP.
        """
        if choice.is_floating_point():  # soft: both modules run on every token, outputs weighted
            w = choice.to(u.dtype)
            return w[..., Choice.BIG, None] * self.big(u) + w[..., Choice.SMALL, None] * self.small(u)
        if choice.dim() == 0:  # one choice for every token: three readable branches, no gather
            c = int(choice)  # a static route lives on the host side of the model's forward
            if c == Choice.BIG:
                return self.big(u)
            if c == Choice.SMALL:
                return self.small(u)
            return torch.zeros_like(u)
        kernel = kernels.choose(self.kernel, u)
        if kernel != "reference":
            return kernels.PATHS[kernel](u, choice, self.small, self.big)
        B, T, C = u.shape
        flat = u.reshape(B * T, C)  # (N, C)
        picks = choice.reshape(B * T)  # (N,)
        parts = []
        for module, c in ((self.small, Choice.SMALL), (self.big, Choice.BIG)):
            idx = torch.nonzero(picks == c).squeeze(1)  # (n_c,) rows that chose this module
            if idx.numel():
                parts.append((idx, module(flat.index_select(0, idx))))  # (n_c, C): only these rows run
        if not parts:  # every token skips this layer
            return torch.zeros_like(u)
        out = parts[0][1].new_zeros(B * T, C)  # (N, C) in the modules' dtype (bf16 under autocast)
        for idx, y in parts:
            out = out.index_copy(0, idx, y)  # scatter back; rows that skip stay zero
        return out.view(B, T, C)

"""The FFN modules and the routed FFN, the readable reference dispatch (docs/design.md §2, §7.7, §7.10).

`SwiGLU` is the Llama FFN (Shazeer 2020, "GLU Variants Improve Transformer"): `down(silu(gate(u)) * up(u))`,
no biases. `RoutedFFN` holds the two modules of a layer, `small` and `big`, and sends each token through the
one its route chooses, or through neither (SKIP adds nothing to the residual stream). The per-token path
gathers the tokens of each choice, runs the module on those rows only and scatters the results back, so a
module never runs on a token that did not choose it. The fast GPU paths live in `kernels/` and must
match this one.

`SmallView` is a SMALL module that owns no weights: it reads the first `d_small` inner neurons of its layer's BIG
(the first rows of BIG's gate and up, the first columns of its down), so SMALL is a sub-network of BIG stored
once (`DuoConfig.small_view`; pretrained/slice.py orders BIG's neurons so that the kept ones come first).
Its `gate`, `up` and `down` are `NeuronSlice`s, which offer what the kernels use of an `nn.Linear`: `.weight`
and a call. The slices are views, so SMALL's gradients land in BIG's weights.
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
        self.fused: Tensor | None = None  # gate's and up's weights as one matrix, while model/fuse.py switches it on
        self.one_row = False  # one row through the matrix-vector kernels (kernels.linear), while model/fuse.py says so

    def hidden(self, u: Tensor) -> Tensor:
        """silu(gate(u)) * up(u): the inner activations (..., d_ff)."""
        if self.fused is not None and not torch.is_grad_enabled():  # one matmul for gate and up (inference: model/fuse.py)
            if self.one_row:
                return kernels.glu(u, self.gate.weight, self.up.weight, one_row=True)  # the fused matrix's two halves
            g, up = nn.functional.linear(u, self.fused).chunk(2, dim=-1)
            return nn.functional.silu(g) * up
        return nn.functional.silu(self.gate(u)) * self.up(u)

    def forward(self, u: Tensor) -> Tensor:
        h = self.hidden(u)
        return kernels.linear(h, self.down.weight, one_row=True) if self.one_row else self.down(h)  # (N, C)


class NeuronSlice:
    """One of a SwiGLU's linear maps on its first `n` inner neurons: gate's and up's first n rows, down's first n
    columns. Not a module and no parameter: `weight` is a view of the owner's weight, read at each use (so it
    follows `.to()`, a dtype cast or a weight loaded later). Offers what the kernels use of an `nn.Linear`."""

    def __init__(self, owner: SwiGLU, name: str, n: int):
        self.owner, self.name, self.n = owner, name, n  # the owner is a plain reference: not a submodule

    @property
    def weight(self) -> Tensor:
        w = getattr(self.owner, self.name).weight  # (d_ff, C) for gate/up, (C, d_ff) for down
        return w[:, : self.n] if self.name == "down" else w[: self.n]  # (C, n) strided, or (n, C) contiguous

    def __call__(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight)

    def __repr__(self) -> str:
        return f"NeuronSlice({self.name}, first {self.n})"


class SmallView(nn.Module):
    """SMALL as BIG's first `d_ff` inner neurons: SwiGLU's forward over `NeuronSlice`s of `big`; no parameters."""

    def __init__(self, big: SwiGLU, d_ff: int):
        super().__init__()
        if not 1 <= d_ff <= big.gate.weight.shape[0]:
            raise ValueError(f"a view of {d_ff} neurons needs 1..{big.gate.weight.shape[0]} (BIG's width)")
        self.gate, self.up, self.down = (NeuronSlice(big, name, d_ff) for name in ("gate", "up", "down"))
        self.one_row = False  # as SwiGLU's

    def forward(self, u: Tensor) -> Tensor:
        h = kernels.glu(u, self.gate.weight, self.up.weight, self.one_row)
        return kernels.linear(h, self.down.weight, self.one_row)  # (N, C)

    def extra_repr(self) -> str:
        return f"BIG's first {self.gate.n} inner neurons"


class RoutedFFN(nn.Module):
    """A layer's `small` and `big` modules and the per-token choice between them (or neither). With `small_view`,
    `small` is a `SmallView` of `big` (no weights of its own)."""

    def __init__(self, d_model: int, d_small: int, d_big: int, kernel: str = "auto", small_view: bool = False):
        super().__init__()
        if small_view:
            big = SwiGLU(d_model, d_big)
            small = SmallView(big, d_small)
        else:  # SMALL made first: the order of the random init and of the state dict
            small, big = SwiGLU(d_model, d_small), SwiGLU(d_model, d_big)
        self.small, self.big = small, big
        self.kernel = kernel  # per-token path: "reference" (below), "sorted", "grouped", "masked" (kernels/), "auto" (kernels.choose)

    def forward(self, u: Tensor, choice: Tensor | int, counts: tuple[int, int, int] | None = None) -> Tensor:
        """`u` (B, T, C) normalised input; `choice` an int or a 0-d uint8 (one choice for all), (B, T) uint8, or
        (B, T, 3) float weights over (SKIP, SMALL, BIG) for a soft mixture (a router in training). `counts`
        (BIG, SMALL, SKIP) of per-token choices, when the caller knows them: the sorted path then reads none.

        Returns the FFN's contribution to the residual stream, (B, T, C); zero where the choice is SKIP.
        """
        if isinstance(choice, Tensor) and choice.is_floating_point():  # soft: both modules run on every token, outputs weighted
            w = choice.to(u.dtype)
            return w[..., Choice.BIG, None] * self.big(u) + w[..., Choice.SMALL, None] * self.small(u)
        if isinstance(choice, int) or choice.dim() == 0:  # one choice for every token: three readable branches, no gather
            c = int(choice)  # a static route lives on the host side of the model's forward
            if c == Choice.BIG:
                return self.big(u)
            if c == Choice.SMALL:
                return self.small(u)
            return torch.zeros_like(u)
        kernel = kernels.choose(self.kernel, u, isinstance(self.small, SmallView), counts is not None)
        if kernel == "sorted":
            return kernels.PATHS[kernel](u, choice, self.small, self.big, counts)
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

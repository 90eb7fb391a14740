"""SMALL modules sliced from BIG ones: each layer's small FFN is its big FFN restricted to the `d_small` inner
neurons that matter most.

A SwiGLU module is a sum over its inner neurons j: `down(silu(gate(u)) * up(u)) = Σ_j W_down[:, j] ·
silu(W_gate[j] · u) · (W_up[j] · u)`. Keeping a subset of neurons (their gate and up rows, their down columns)
gives a narrower module that computes exactly the big one's sum over that subset; `slice_scores` says which
neurons to keep:

- without calibration text, from the weights alone: `||W_down[:, j]|| · ||W_gate[j]|| · ||W_up[j]||`;
- with calibration tokens, from what the neuron does on them: `mean |silu(gate_j(u)) · up_j(u)| · ||W_down[:, j]||`
  over every token's FFN input u (the state after the layer's `ffn_norm`, from an all-BIG forward).

SMALL is stored either as its own weights (a copy of the kept rows and columns), or, with `view=True`, as a view of
BIG's (`model/ffn.py` `SmallView`): BIG's neurons are reordered so that the kept ones come first, in their own
order (a SwiGLU is a sum over its neurons, so reordering them changes nothing BIG computes), and SMALL reads
BIG's first `d_small` neurons. The model then has no SMALL parameters, and SMALL computes what the copy would.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from duollm.errors import DuoError
from duollm.model.ffn import SmallView, SwiGLU
from duollm.model.transformer import DuoLM


def slice_scores(big: SwiGLU, u: Tensor | None = None) -> Tensor:
    """The importance of each inner neuron of `big`, (d_ff,) float32: the weight-only score, or with `u`
    (N, C), the FFN inputs of N calibration tokens, the mean size of each neuron's output on them."""
    down = big.down.weight.float().norm(dim=0)  # (d_ff,): ||W_down[:, j]||
    if u is None:
        return down * big.gate.weight.float().norm(dim=1) * big.up.weight.float().norm(dim=1)  # (d_ff,)
    act = F.silu(big.gate(u)) * big.up(u)  # (N, d_ff): each neuron's coefficient on its down column
    return act.float().abs().mean(0) * down  # (d_ff,)


@torch.no_grad()
def ffn_inputs(model: DuoLM, calib: Tensor, batch: int = 8) -> list[Tensor]:
    """Each layer's FFN input (the state after its `ffn_norm`, what both modules see) on an all-BIG forward of
    `calib` (B, T) token ids: L tensors (B·T, C) float32 on the CPU, caught by forward hooks, `batch` rows at a time."""
    check_calib(model, calib)
    caught: list[list[Tensor]] = [[] for _ in model.blocks]
    hooks = [
        block.ffn_norm.register_forward_hook(lambda m, a, u, l=l: caught[l].append(u.flatten(0, 1).float().cpu()))
        for l, block in enumerate(model.blocks)
    ]
    try:
        device = model.embed.weight.device
        for i in range(0, len(calib), batch):
            model(calib[i : i + batch].to(device))  # route None: all BIG
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(c) for c in caught]


@torch.no_grad()
def calib_scores(model: DuoLM, calib: Tensor | None = None, inputs: list[Tensor] | None = None) -> list[Tensor]:
    """Each layer's `slice_scores` over its FFN inputs on calibration text: L tensors (d_big,). Give the token ids
    `calib` (B, T), or the `inputs` of `ffn_inputs` when they are at hand already."""
    inputs = ffn_inputs(model, calib) if inputs is None else inputs
    return [slice_scores(b.ffn.big, u.to(b.ffn.big.gate.weight.device)) for b, u in zip(model.blocks, inputs, strict=True)]


def check_calib(model: DuoLM, calib: Tensor) -> None:
    """DuoError unless `calib` is a (B, T) integer tensor of token ids the model can run."""
    cfg = model.cfg
    if not isinstance(calib, Tensor) or calib.dim() != 2 or calib.is_floating_point() or calib.numel() == 0:
        raise DuoError("calib must be a non-empty (batch, seq_len) tensor of token ids")
    if calib.shape[1] > cfg.max_seq_len:
        raise DuoError(f"calib has {calib.shape[1]} tokens per row, more than max_seq_len {cfg.max_seq_len}")
    if int(calib.min()) < 0 or int(calib.max()) >= cfg.vocab_size:
        raise DuoError(f"calib holds token ids outside 0..{cfg.vocab_size - 1}")


def top_neurons(scores: Tensor, k: int) -> Tensor:
    """The k highest-scoring neurons, (k,) int64 in ascending index order (the big module's own order)."""
    return scores.topk(k).indices.sort().values


@torch.no_grad()
def slice_into(small: SwiGLU, big: SwiGLU, keep: Tensor) -> None:
    """Make `small` the sub-network of `big` on the neurons `keep` (d_small,): their gate and up rows, their down columns."""
    small.gate.weight.copy_(big.gate.weight[keep])  # (d_small, C)
    small.up.weight.copy_(big.up.weight[keep])  # (d_small, C)
    small.down.weight.copy_(big.down.weight[:, keep])  # (C, d_small)


@torch.no_grad()
def keep_first(big: SwiGLU, keep: Tensor) -> None:
    """Reorder `big`'s inner neurons so that `keep` (k,) come first, in their order, then the rest in theirs: gate
    and up rows and down columns by one permutation, so `big` computes the same function (up to summation order)."""
    rest = torch.ones(big.gate.weight.shape[0], dtype=torch.bool, device=keep.device)  # (d_ff,)
    rest[keep] = False
    perm = torch.cat([keep, rest.nonzero().squeeze(1)])  # (d_ff,) new position i holds old neuron perm[i]
    big.gate.weight.copy_(big.gate.weight[perm])  # (d_ff, C): the index makes a copy first, so no aliasing
    big.up.weight.copy_(big.up.weight[perm])  # (d_ff, C)
    big.down.weight.copy_(big.down.weight[:, perm])  # (C, d_ff)


def slice_small(model: DuoLM, calib: Tensor | None = None, inputs: list[Tensor] | None = None, view: bool = False) -> None:
    """Every layer's SMALL := its BIG on the `cfg.d_small` neurons with the highest `slice_scores`: from the
    weights alone, or from calibration text (token ids `calib` (B, T), or the FFN inputs `inputs` of `ffn_inputs`).
    `view`: reorder BIG's neurons so the kept ones come first and make SMALL a view of them (`SmallView`, no
    parameters of its own; `model.cfg.small_view` becomes True) instead of copying them into SMALL's weights."""
    blocks = model.blocks
    if calib is None and inputs is None:
        scores = [slice_scores(b.ffn.big) for b in blocks]
    else:
        scores = calib_scores(model, calib, inputs)
    for block, s in zip(blocks, scores, strict=True):
        keep = top_neurons(s, model.cfg.d_small)  # (d_small,) ascending
        if view:
            keep_first(block.ffn.big, keep)
            block.ffn.small = SmallView(block.ffn.big, model.cfg.d_small)  # replaces SMALL's module and its weights
        elif isinstance(block.ffn.small, SmallView):
            raise DuoError("SMALL is a view of BIG (small_view): slice it with view=True, or build the model without small_view")
        else:
            slice_into(block.ffn.small, block.ffn.big, keep)
    if view:
        model.cfg = dataclasses.replace(model.cfg, small_view=True)  # a new config: the old one may be shared

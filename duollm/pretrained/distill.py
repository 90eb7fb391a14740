"""SMALL modules distilled from BIG ones, layer by layer (the representation distillation of ACM).

Each layer's SMALL module learns to give what its BIG module gives on the same input: the inputs are the
states each layer's FFN sees (after its `ffn_norm`) in an all-BIG forward of calibration text, the target is
BIG's output on them, and the loss is the squared error relative to the target's mean square,
`||small(u) - big(u)||² / ||big(u)||²` over a batch. Layers are independent (each is taught on the all-BIG
states, not on what earlier SMALL modules would make of them), so the order does not matter. Training starts
from the current SMALL (a slice of BIG: slice.py), with Adam and a cosine decay; only SMALL's weights change.
The held-out error (on the last eighth of the tokens, never trained on) is measured before and after.
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.model.ffn import SwiGLU
from duollm.model.transformer import DuoLM


def relative_error(out: Tensor, target: Tensor) -> Tensor:
    """||out - target||² / ||target||² over the rows of (N, C) tensors: a scalar."""
    return (out - target).pow(2).sum() / target.pow(2).sum()


def distill_layer(small: SwiGLU, big: SwiGLU, u: Tensor, steps: int, lr: float, batch: int, gen: torch.Generator) -> dict:
    """Train `small` on the rows of `u` (N, C) to match `big`; {"before", "after"}: held-out relative error."""
    with torch.no_grad():
        target = big(u)  # (N, C): computed once, BIG does not change
    n_held = max(1, len(u) // 8)
    (train, held), (y_train, y_held) = (u[:-n_held], u[-n_held:]), (target[:-n_held], target[-n_held:])
    with torch.no_grad():
        before = float(relative_error(small(held), y_held))
    opt = torch.optim.Adam(small.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)  # lr → 0 at the last step
    for _ in range(steps):
        rows = torch.randint(0, len(train), (min(batch, len(train)),), generator=gen)
        loss = relative_error(small(train[rows]), y_train[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        after = float(relative_error(small(held), y_held))
    return {"before": before, "after": after}


@torch.no_grad()
def small_errors(model: DuoLM, inputs: list[Tensor]) -> list[dict]:
    """Each layer's held-out relative error of SMALL against BIG (on the last eighth of its FFN inputs `inputs`,
    from slice.ffn_inputs), as {"after": ...}: the measure `distill_small` reports, for a SMALL that is not trained."""
    out = []
    for block, u in zip(model.blocks, inputs, strict=True):
        held = u[-max(1, len(u) // 8) :].to(block.ffn.big.gate.weight.device)
        out.append({"after": float(relative_error(block.ffn.small(held), block.ffn.big(held)))})
    return out


def distill_small(model: DuoLM, inputs: list[Tensor], steps: int = 200, lr: float = 1e-3, batch: int = 512, seed: int = 0) -> list[dict]:
    """Distil every layer's SMALL from its BIG on its FFN inputs `inputs` (L tensors (N, C), from slice.ffn_inputs);
    per layer {"before", "after"}: the held-out relative error."""
    gen = torch.Generator().manual_seed(seed)
    was = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    out = []
    try:
        for block, u in zip(model.blocks, inputs, strict=True):
            small, big = block.ffn.small, block.ffn.big
            small.requires_grad_(True)
            out.append(distill_layer(small, big, u.to(big.gate.weight.device), steps, lr, batch, gen))
            small.requires_grad_(False)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(was[n])
    return out

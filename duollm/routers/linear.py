"""A learned router: one linear layer per layer over the pre-FFN normalised state (arXiv:2410.10846 §2;
docs/design.md §2).

At layer l the router sees u_l = ffn_norm(h_l) of each token, the same input both modules see, and scores
the choices it may make (its *options*): `logits = W_l u_l + b_l`. A token's choice depends on its own state
only, and that state on tokens ≤ t, so the router is causal and works token by token in decoding.

- Soft (training the paper's way): weights `softmax(β · logits)` mix the modules' outputs; β (the inverse
  temperature) is annealed upward by the trainer so that soft routing approaches hard routing.
- Hard (evaluation): `argmax(logits + offset)`. `offset` (one value per option) is set by calibration so that
  the realised fraction of each choice meets the budget (routers/calibrate.py); zero until then.

The paper router is this module, trained through the language-model loss and a budget penalty
(train/router_fit.py); the oracle-supervised router is routers/route_head.py. Both are saved by `storage.save_router` as
safetensors (weights and buffers) + JSON (what it is), never pickle.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from duollm.routing.route import N_CHOICES, Choice

NAMES = {"big": Choice.BIG, "small": Choice.SMALL, "skip": Choice.SKIP}


def fp32_scores(u: Tensor):
    """Autocast off, for a router's scores: they are tiny to compute, and in bf16 scores that differ by less than
    its 8-bit mantissa tie, so calibration cannot split them. A layer head whose per-layer scores are constants
    then realises whole layers on either side of its target (the study's, 5 of 12 BIG for a target of 6, most
    likely this way). In fp32, scores closer than the bisection's step (80 / 2^20 logits) still tie."""
    return torch.autocast(u.device.type, enabled=False)


class LinearRouter(nn.Module):
    """Per-layer linear scores over `options` (Choice values, ascending); soft mixture or hard argmax."""

    def __init__(self, n_layer: int, d_model: int, options: tuple[int, ...]):
        super().__init__()
        self.options = tuple(sorted(int(c) for c in options))
        K = len(self.options)
        self.layers = nn.ModuleList(nn.Linear(d_model, K) for _ in range(n_layer))
        for lin in self.layers:
            nn.init.zeros_(lin.weight), nn.init.zeros_(lin.bias)  # start undecided: uniform over options
        self.register_buffer("beta", torch.tensor(1.0))  # inverse temperature of the soft mixture
        self.register_buffer("offset", torch.zeros(K))  # added to the logits for hard decisions (calibration)
        self.register_buffer("choices", torch.tensor(self.options, dtype=torch.uint8))  # (K,) option → Choice
        self.soft = False  # soft weights (training) or hard choices (evaluation)

    def logits(self, l: int, u: Tensor) -> Tensor:
        """(B, T, C) → (B, T, K) float32 scores of the options at layer l, in fp32 under autocast too."""
        with fp32_scores(u):
            return self.layers[l](u.float())

    def probs(self, l: int, u: Tensor) -> Tensor:
        """(B, T, K): softmax(β · logits), the soft routing probabilities."""
        return (self.beta * self.logits(l, u)).softmax(-1)

    def forward(self, l: int, u: Tensor) -> Tensor:
        """Soft: (B, T, 3) weights over (SKIP, SMALL, BIG). Hard: (B, T) uint8 choices."""
        if self.soft:
            return self.spread(self.probs(l, u))
        return self.choices[(self.logits(l, u) + self.offset).argmax(-1)]  # (B, T)

    def spread(self, p: Tensor) -> Tensor:
        """Option probabilities (B, T, K) → weights over all choices (B, T, 3), zero where not an option."""
        return p.new_zeros(*p.shape[:-1], N_CHOICES).index_copy(-1, self.choices.long(), p)


def budget_penalty(probs: list[Tensor], options: tuple[int, ...], target: dict[int, float]) -> Tensor:
    """Σ_c (mean P_c − target_c)² over the constrained choices c (all options but one); probs: (B, T, K) per layer."""
    mean = torch.stack([p.mean((0, 1)) for p in probs]).mean(0)  # (K,) mean probability of each option
    terms = [(mean[options.index(c)] - target[c]) ** 2 for c in constrained(options)]
    return torch.stack(terms).sum()


def constrained(options: tuple[int, ...]) -> tuple[int, ...]:
    """The choices a budget counts: BIG of big/small, SKIP of big/skip, BIG and SKIP of all three."""
    return (Choice.BIG,) if Choice.SKIP not in options else (Choice.SKIP,) if Choice.SMALL not in options else (Choice.BIG, Choice.SKIP)


def realised(route: Tensor) -> dict[str, float]:
    """Fraction of (token, layer) choices of each kind in a route (..., L)."""
    n = route.numel()
    return {name: float((route == c).sum()) / n for name, c in NAMES.items()}

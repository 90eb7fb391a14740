"""Baselines beside the oracle (docs/design.md §2): random best-of-N (and `fixed`, in search.py), and a label-free
choice that bounds what per-token routing can gain without the label.

Random best-of-N (the paper's "best of 100 random", its Fig. 4a, read as in docs/design.md §2): N trials; in
each, every token draws its own route uniformly from the budget's route set; the trial with the lowest mean loss
counts, and the spread of all trials is reported beside it.

Label-free (ours): the shared oracle with the label replaced by a prediction of it. Every route of the budget
runs as a whole-sequence route, as in the shared oracle; each token takes the route whose next-token
distribution has the lowest cross-entropy against a reference distribution (by default all-big's), and is scored
on the label. No label is read, so no router that sees only tokens ≤ t can be expected to beat it by much,
however well it learns: it knows every route's prediction. What it recovers of the oracle's gain is the part of
that gain that is not luck on the label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from duollm.model.transformer import DuoLM
from duollm.oracle.groups import Groups
from duollm.oracle.search import route_loss
from duollm.routing.budget import Budget, Schedule
from duollm.routing.route import Choice
from duollm.routing.sample import draw_routes


@dataclass
class RandomResult:
    """Per-token losses of the best of N random trials, and every trial's mean loss."""

    loss: Tensor  # (B, T-1) float32: losses of the best trial
    route: Tensor  # (B, T, L) uint8: the best trial's routes
    trial_means: Tensor  # (N,) float64: mean loss of each trial, in draw order


@dataclass
class LabelFreeResult:
    """Per-token losses under the routes picked without the label, and the picks."""

    loss: Tensor  # (B, T-1) float32: each predicted token's loss under the route it picked
    pick: Tensor  # (B, T-1) int64: index of that route in `budget.routes(n_layer)`
    route_losses: Tensor  # (R, B, T-1) float32: every route's losses, from which the shared oracle and `fixed` follow


@torch.no_grad()
def label_free(model: DuoLM, ids: Tensor, budget: Budget, reference: Tensor | None = None, groups: Groups | None = None) -> LabelFreeResult:
    """Each token's route, among `budget`'s whole-sequence routes, by the lowest cross-entropy of its next-token
    distribution against `reference` (B, T-1, V) probabilities (default: the all-big model's); one forward per
    route. With the label as a one-hot reference, this is the shared oracle. With `groups`, the routes are the
    grouped ones (groups.py: consecutive layers share a choice), so that a deep model's route set stays small."""
    if not isinstance(budget, Budget):
        raise ValueError("the label-free choice takes a Budget, not a schedule")
    B, T = ids.shape
    L = model.cfg.n_layer
    routes = (budget.routes(L) if groups is None else groups.routes(budget)).to(ids.device)

    def log_probs(route: Tensor) -> Tensor:  # (L,): one route for every token, each module a plain dense call
        return model(ids, route=route).logits[:, :-1].float().log_softmax(-1)

    if reference is None:
        reference = log_probs(torch.full((L,), Choice.BIG, dtype=torch.uint8, device=ids.device)).exp()
    best = torch.full((B, T - 1), float("inf"), device=ids.device)
    loss = torch.zeros(B, T - 1, device=ids.device)
    pick = torch.zeros(B, T - 1, dtype=torch.long, device=ids.device)
    every = []
    for i, r in enumerate(routes):
        lp = log_probs(r)
        ce = -(reference * lp).sum(-1)
        every.append(-lp.gather(-1, ids[:, 1:, None]).squeeze(-1))
        better = ce < best
        best, loss, pick = torch.where(better, ce, best), torch.where(better, every[-1], loss), torch.where(better, i, pick)
    return LabelFreeResult(loss=loss, pick=pick, route_losses=torch.stack(every))


def label_free_summary(model: DuoLM, windows: Tensor, budget: Budget, batch_size: int = 32, groups: Groups | None = None) -> dict:
    """`label_free` over windows (N, T), batch by batch: the mean loss (nats per token) of `fixed` (the best single
    route), of the label-free choice and of the shared oracle; the share of fixed → oracle the choice recovers; and
    its paired difference from `fixed` with one standard error."""
    device = next(model.parameters()).device
    parts = [label_free(model, w.to(device), budget, groups=groups) for w in windows.split(batch_size)]
    chosen = torch.cat([p.loss for p in parts]).double()  # (N, T-1)
    every = torch.cat([p.route_losses for p in parts], 1).double()  # (R, N, T-1)
    fixed = every[every.mean((1, 2)).argmin()]
    d = chosen - fixed
    loss = {"fixed": float(fixed.mean()), "label_free": float(chosen.mean()), "oracle_shared": float(every.min(0).values.mean())}
    gap = loss["fixed"] - loss["oracle_shared"]
    return {
        **{f"loss_{n}": v for n, v in loss.items()},
        **{f"ppl_{n}": math.exp(v) for n, v in loss.items()},
        "gap_recovered": float(-d.mean()) / gap if gap > 0 else None,
        "diff_fixed": float(d.mean()),
        "diff_fixed_se": float(d.std() / d.numel() ** 0.5),
    }


@torch.no_grad()
def random_best_of_n(model: DuoLM, ids: Tensor, budget: Budget | Schedule, n: int, gen: torch.Generator) -> RandomResult:
    """N trials of independent uniform per-token routes inside `budget`; keep the best by mean loss."""
    if n < 1:
        raise ValueError(f"random best-of-N needs N >= 1, got {n}")
    B, T = ids.shape
    best, means = None, []
    for _ in range(n):
        route = draw_routes(budget, model.cfg.n_layer, B, T, gen)  # (B, T, L)
        loss = route_loss(model, ids, route)  # (B, T-1)
        means.append(float(loss.double().mean()))
        if best is None or means[-1] < best[0]:
            best = (means[-1], loss, route)
    return RandomResult(loss=best[1], route=best[2], trial_means=torch.tensor(means, dtype=torch.float64))

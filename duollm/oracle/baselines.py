"""Cheap baselines beside the oracle (DESIGN.md §2): random best-of-N (and `fixed`, in search.py).

Random best-of-N (shared/paper/duo-llm.md §3, reading (i)): N trials; in each, every token draws its own
route uniformly from the budget's route set; the trial with the lowest mean loss counts, and the spread of
all trials is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from duollm.model.transformer import DuoLM
from duollm.oracle.search import route_loss
from duollm.routing.budget import Budget, Schedule, per_position


@dataclass
class RandomResult:
    """Per-token losses of the best of N random trials, and every trial's mean loss."""

    loss: Tensor  # (B, T-1) float32: losses of the best trial
    route: Tensor  # (B, T, L) uint8: the best trial's routes
    trial_means: Tensor  # (N,) float64: mean loss of each trial, in draw order


def draw_routes(budget: Budget | Schedule, n_layer: int, B: int, T: int, gen: torch.Generator) -> Tensor:
    """Every token an independent route drawn uniformly from its position's route set: (B, T, L) uint8.

    Position t < T-1 uses the budget of predicted position t; the last token (nothing to predict) repeats it."""
    per = per_position(budget, T - 1)
    per = per + per[-1:]  # (T,)
    out = torch.empty(B, T, n_layer, dtype=torch.uint8)
    for b in sorted(set(per), key=per.index):
        at = torch.tensor([t for t, p in enumerate(per) if p == b])  # positions under budget b
        routes = b.routes(n_layer)  # (R, L)
        out[:, at] = routes[torch.randint(0, len(routes), (B, len(at)), generator=gen)]
    return out


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

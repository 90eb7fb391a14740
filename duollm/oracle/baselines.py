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
from duollm.oracle.search import token_loss
from duollm.routing.budget import Budget


@dataclass
class RandomResult:
    """Per-token losses of the best of N random trials, and every trial's mean loss."""

    loss: Tensor  # (B, T-1) float32: losses of the best trial
    route: Tensor  # (B, T, L) uint8: the best trial's routes
    trial_means: Tensor  # (N,) float64: mean loss of each trial, in draw order


@torch.no_grad()
def random_best_of_n(model: DuoLM, ids: Tensor, budget: Budget, n: int, gen: torch.Generator) -> RandomResult:
    """N trials of independent uniform per-token routes inside `budget`; keep the best by mean loss."""
    if n < 1:
        raise ValueError(f"random best-of-N needs N >= 1, got {n}")
    routes = budget.routes(model.cfg.n_layer)  # (R, L)
    B, T = ids.shape
    best, means = None, []
    for _ in range(n):
        pick = torch.randint(0, len(routes), (B, T), generator=gen)  # (B, T) route index per token
        route = routes[pick]  # (B, T, L)
        loss = token_loss(model(ids, route=route).logits, ids)  # (B, T-1)
        means.append(float(loss.double().mean()))
        if best is None or means[-1] < best[0]:
            best = (means[-1], loss, route)
    return RandomResult(loss=best[1], route=best[2], trial_means=torch.tensor(means, dtype=torch.float64))

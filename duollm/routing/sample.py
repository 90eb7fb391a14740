"""Random routes, every kind duollm draws, in one place. Each keeps its own way of drawing (its random stream),
so results that depend on them repeat exactly:

- `random_route`: independent choices per (token, layer) with P(SKIP, SMALL, BIG): stage-1 training and
  `random:P` evaluation (thresholds on one uniform draw per choice);
- `RandomRouter`: the same distribution as a router, one layer at a time: decoding, where it runs inside CUDA
  graphs when it has no generator;
- `draw_routes`: every token a route drawn uniformly from its position's route set: random best-of-N;
- `random_routes`: one of two options per layer with probability 1/2: the layer head's label routes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.errors import DuoError
from duollm.routing.budget import Budget, Schedule, per_position
from duollm.routing.route import Choice


def random_route(shape: tuple[int, ...], p_big: float, p_small: float, p_skip: float, gen: torch.Generator, exact: bool = False) -> Tensor:
    """Random choices per (token, layer): (..., B, T, L) uint8 with P(SKIP, SMALL, BIG) = (p_skip, p_small, p_big).

    Independent draws; or with `exact`, exact proportions: at each layer of each (B, T) block, `exact_counts` of the
    B·T tokens take BIG, SMALL and SKIP, the tokens picked by a random permutation of their own per layer. Every
    token's choice still has the probabilities p (up to the rounding of the counts) and the layers stay independent;
    what changes is that the counts are the same at every step, so a compiled model's routed FFN runs at fixed shapes
    (train/loop.py, `--train.exact_counts`)."""
    total = p_big + p_small + p_skip
    if min(p_big, p_small, p_skip) < 0 or abs(total - 1) > 1e-6:
        raise DuoError(f"routing probabilities must be >= 0 and sum to 1, got big={p_big} small={p_small} skip={p_skip}")
    u = torch.rand(shape, generator=gen)  # (..., B, T, L) uniform in [0, 1)
    if exact:
        return exact_route(u, p_big, p_small)
    return (u >= p_skip).to(torch.uint8) + (u >= p_skip + p_small).to(torch.uint8)  # 0, 1 or 2


def exact_route(u: Tensor, p_big: float, p_small: float) -> Tensor:
    """`random_route(exact=True)` from its uniforms `u` (..., B, T, L): in each layer of each (B, T) block, the tokens
    in the order of their draws take BIG, then SMALL, then SKIP, by `exact_counts` (so a caller may draw the
    uniforms of several blocks, to keep a generator in step, and turn only its own into a route)."""
    *lead, B, T, L = u.shape
    order = u.reshape(*lead, B * T, L).argsort(-2)  # (..., N, L): the tokens of each layer in a random order
    n_big, n_small, n_skip = exact_counts(B * T, p_big, p_small)
    pattern = torch.tensor([Choice.BIG] * n_big + [Choice.SMALL] * n_small + [Choice.SKIP] * n_skip, dtype=torch.uint8)
    route = torch.empty(order.shape, dtype=torch.uint8)
    return route.scatter_(-2, order, pattern[:, None].expand(order.shape).contiguous()).reshape(u.shape)


def exact_counts(n: int, p_big: float, p_small: float) -> tuple[int, int, int]:
    """(BIG, SMALL, SKIP) tokens of n in the proportions p, summing to n: what `random_route(exact=True)` gives every
    layer. The bounds are rounded cumulatively, so a choice of probability 0 gets no token."""
    n_big = round(p_big * n)
    n_small = max(0, min(n, round((p_big + p_small) * n)) - n_big)
    return n_big, n_small, n - n_big - n_small


class RandomRouter:
    """Each (token, layer) draws BIG, SMALL or SKIP with probabilities p: `random:P` as a router.

    With a CPU generator `gen` the draws are made on the host (reproducible on any device); without one they
    are made on the state's device from the global generator, with nothing read on the host, so the router
    can run inside a CUDA graph (`Decoder`)."""

    def __init__(self, p: tuple[float, float, float], gen: torch.Generator | None = None):
        self.p = torch.tensor([p[2], p[1], p[0]], dtype=torch.float64)  # indexed by Choice: SKIP, SMALL, BIG
        self.gen = gen

    def __call__(self, layer: int, u: Tensor) -> Tensor:
        if self.gen is None:  # r < p_skip → SKIP; < p_skip + p_small → SMALL; else BIG
            r = torch.rand(u.shape[:2], device=u.device, dtype=torch.float64)  # (B, T)
            edges = self.p.cumsum(0)
            return (r >= float(edges[0])).to(torch.uint8) + (r >= float(edges[1])).to(torch.uint8)
        draw = torch.multinomial(self.p, u.shape[0] * u.shape[1], replacement=True, generator=self.gen)
        return draw.view(u.shape[:2]).to(torch.uint8).to(u.device)  # (B, T)


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


def random_routes(shape: tuple[int, ...], options: tuple[int, ...], seed: int) -> Tensor:
    """(…, L) uint8 routes taking each of the two options with probability 1/2 at every layer, seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(options, dtype=torch.uint8)[torch.randint(0, 2, shape, generator=g)]

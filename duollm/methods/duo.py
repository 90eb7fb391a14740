"""`duo-random`: the Duo model as the repository trains it, random routing, then the best fixed route at the budget
(issue 21, entrant 1; the paper's stage 1, arXiv:2410.10846 §2).

Training: the existing `DuoLM`, each (token, layer) choice drawn afresh every forward with probabilities
`p_big, p_small, p_skip` (routing/sample.py `random_route`, as train/loop.py draws them; default 0.5/0.5/0), from the
entrant's own generator, seeded from torch's global one when the entrant is built (the arena seeds that).

Evaluation (`eval()`): static routes, chosen by `calibrate(windows)` on held-out windows of the training text (the
shared oracle's `fixed` route, oracle/search.py `search_many`: of a set of routes, the one with the lowest summed
loss). The candidates are the routes the model trained on (BIG and SMALL, and SKIP when `p_skip > 0`). A route's FFN
FLOPs move in steps (k BIG layers of L, the rest SMALL: steps of 1/L of the range between all-SMALL and all-BIG), so
one route rarely meets `budget` (a fraction of all-BIG's FFN FLOPs): at 8 layers, k = 4 spends 0.531 and k = 3
0.414. **Choice: a mix of two routes.** When no count of choices comes within 0.005 of the budget, calibrate picks
the best route of the nearest count below the budget (`route`) and of the nearest above (`mix_route`), and a fraction
`mix` of the positions takes `mix_route`, so that the FFN FLOPs average to the budget: position p takes it when
floor((p+1)·mix + 1/2) > floor(p·mix + 1/2), evenly spread and fixed by the position alone (so causal, and the same in decoding
as in a full forward). Both routes and `mix` are kept in `options`, so `save_entrant` / `load_entrant` and decoding
reproduce them. Until calibrate runs, the route spreads its k BIG layers (the count nearest the budget) evenly over the
depth and `mix` is 0.

FLOPs per token: `route_cost` of the route taken (routing/cost.py), the attention at the token's own position
(methods/dense.py `attention_flops`), so that decoding and a full forward count alike.
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.errors import DuoError
from duollm.methods.base import Entrant, MethodOutput
from duollm.methods.dense import attention_flops
from duollm.model.transformer import DuoConfig, DuoLM, KVCache
from duollm.oracle.search import search_many
from duollm.routing.budget import Budget
from duollm.routing.cost import route_cost
from duollm.routing.route import Choice, format_route, parse_route
from duollm.routing.sample import random_route


def big_layers_for_budget(cfg: DuoConfig, budget: float) -> int:
    """The number k of BIG layers (the rest SMALL) whose FFN FLOPs come nearest `budget` of all-BIG's."""
    ffn = cfg.cost().ffn  # (L, 3): the same in every layer
    big, small = float(ffn[:, Choice.BIG].sum()), float(ffn[:, Choice.SMALL].sum())
    L = cfg.n_layer
    share = [(small + k * (big - small) / L) / big for k in range(L + 1)]  # FFN FLOPs with k BIG layers, of all-BIG's
    return min(range(L + 1), key=lambda k: abs(share[k] - budget))


def spread_route(n_layer: int, k: int) -> Tensor:
    """(L,) uint8: k BIG layers spread evenly over the depth, the others SMALL."""
    l = torch.arange(n_layer)
    big = (l + 1) * k // n_layer > l * k // n_layer  # (L,) bool: k of them
    return torch.where(big, Choice.BIG, Choice.SMALL).to(torch.uint8)


def route_share(cfg: DuoConfig, counts: tuple[int, int]) -> float:
    """FFN FLOPs of a route with counts (BIG, SMALL) (the rest SKIP), as a fraction of all-BIG's."""
    ffn = cfg.cost().ffn  # (L, 3): the same in every layer
    big, small = float(ffn[0, Choice.BIG]), float(ffn[0, Choice.SMALL])
    return (counts[0] * big + counts[1] * small) / (cfg.n_layer * big)


def mixed_positions(positions: Tensor, mix: float) -> Tensor:
    """(…) bool: the positions that take the second route of a mix, a fraction `mix` of them spread evenly
    (floor((p+1)·mix + 1/2) > floor(p·mix + 1/2): of positions 0..n-1, round(n·mix) take it); depends on the position
    alone."""
    p = positions.double()
    return torch.floor((p + 1) * mix + 0.5) > torch.floor(p * mix + 0.5)


class DuoRandom(Entrant):
    """DuoLM trained under random routes, evaluated under static routes at its budget (module docstring).

    Options: `budget` (fraction of all-BIG FFN FLOPs at evaluation), `p_big`, `p_small`, `p_skip` (the training
    mix), `route` (the evaluation route as B/S/- letters; "" = spread until `calibrate` chooses it), `mix_route` and
    `mix` (the second route and the fraction of positions that take it; "" and 0 = one route)."""

    method = "duo-random"
    eval_options = ("budget", "route", "mix_route", "mix")  # training draws random routes whatever the budget
    fixed_compute = True  # the evaluation routes are options

    def __init__(
        self,
        cfg: DuoConfig,
        budget: float = 0.5,
        p_big: float = 0.5,
        p_small: float = 0.5,
        p_skip: float = 0.0,
        route: str = "",
        mix_route: str = "",
        mix: float = 0.0,
    ):
        super().__init__(cfg, budget=budget, p_big=p_big, p_small=p_small, p_skip=p_skip, route=route, mix_route=mix_route, mix=mix)
        if not 0 < budget <= 1:
            raise DuoError(f"duo-random: budget is a fraction of all-BIG's FFN FLOPs in (0, 1], got {budget}")
        if not 0 <= mix <= 1 or (mix > 0) != bool(mix_route):
            raise DuoError(
                f"duo-random: mix is the fraction in [0, 1] of positions on mix_route, and needs one (mix={mix}, mix_route={mix_route!r})"
            )
        random_route((1, 1, 1), p_big, p_small, p_skip, torch.Generator())  # DuoError for a bad mix
        self.p = (float(p_big), float(p_small), float(p_skip))
        self.budget = float(budget)  # the target FFN share
        self.k = big_layers_for_budget(cfg, budget)
        try:
            fixed = parse_route(route, cfg.n_layer) if route else spread_route(cfg.n_layer, self.k)
            second = parse_route(mix_route, cfg.n_layer) if mix_route else fixed
        except ValueError as e:
            raise DuoError(f"duo-random: {e}") from None
        self.mix = float(mix)
        self.register_buffer("route", fixed, persistent=False)  # (L,) uint8, on the host side of the forward
        self.register_buffer("mix_route", second, persistent=False)  # (L,) uint8
        self.duo = DuoLM(cfg)
        self.gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))  # training routes, from the global seed

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        w = self.duo.embed.weight
        return KVCache.empty(self.cfg, batch, max_len, device=w.device, dtype=w.dtype)

    def token_flops(self, route: Tensor, positions: Tensor) -> Tensor:
        """Forward FLOPs (B, T) float64 of tokens at `positions` (B, T) under `route` ((L,) or (B, T, L))."""
        table = self.cfg.cost(1)  # the FFN and head parts do not depend on the length; attention comes per position
        ffn_head = route_cost(route.cpu(), table) - float(table.attn.sum())  # () or (B, T)
        return attention_flops(self.cfg, positions.cpu()) + ffn_head  # (B, T)

    def eval_route(self, positions: Tensor) -> Tensor:
        """The evaluation route: (L,) when one route, else (B, T, L) for `positions` (B, T)."""
        if self.mix == 0:
            return self.route.cpu()
        second = mixed_positions(positions, self.mix)[..., None]  # (B, T, 1)
        return torch.where(second, self.mix_route.cpu(), self.route.cpu())  # (B, T, L)

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache: KVCache | None = None) -> MethodOutput:
        """`ids` (B, T) int64; random routes in training, the static route(s) under `eval()`."""
        B, T = ids.shape
        pos = 0 if cache is None else int(cache.pos)
        positions = torch.arange(pos, pos + T).expand(B, T)  # (B, T)
        if self.training:
            route = random_route((B, T, self.cfg.n_layer), *self.p, self.gen)  # (B, T, L) on the host
        else:
            route = self.eval_route(positions)
        out = self.duo(ids, route=route, targets=targets, cache=cache)
        flops = self.token_flops(route, positions).to(ids.device)  # (B, T)
        stats = {name.lower(): float((route == c).float().mean()) for name, c in Choice.__members__.items()}
        return MethodOutput(logits=out.logits, loss=out.loss, aux=torch.zeros((), device=ids.device), flops=flops, stats=stats)

    def candidate_counts(self) -> list[tuple[int, int]]:
        """Counts (BIG, SMALL) of the routes calibrate considers: one within 0.005 of the budget (the best of those),
        else the nearest below and the nearest above it. Only the choices the model trained on."""
        L = self.cfg.n_layer
        trained = lambda k, m: (self.p[0] > 0 or k == 0) and (self.p[1] > 0 or m == 0) and (self.p[2] > 0 or k + m == L)  # noqa: E731
        counts = [(k, m) for k in range(L + 1) for m in range(L + 1 - k) if trained(k, m)]
        share = {c: route_share(self.cfg, c) for c in counts}
        near = [c for c in counts if abs(share[c] - self.budget) <= 0.005]
        if near:
            return near
        below = [c for c in counts if share[c] < self.budget]
        above = [c for c in counts if share[c] > self.budget]
        pair = ([max(below, key=share.get)] if below else []) + ([min(above, key=share.get)] if above else [])
        return pair

    @torch.no_grad()
    def calibrate(self, windows: Tensor, batch_size: int = 16) -> float:
        """Choose the evaluation route(s) (module docstring) by the lowest summed next-token loss over `windows` (N, T)
        (held-out training text, not the evaluation's). Keeps them in `options`; returns the FFN FLOPs they spend over
        the positions 0..T-2 that the windows predict, as a fraction of all-BIG's."""
        was = self.training
        self.eval()
        device = self.duo.embed.weight.device
        L = self.cfg.n_layer
        counts = self.candidate_counts()
        budgets = [Budget.counts(big=k, small=m, skip=L - k - m) for k, m in counts]
        totals, routes = [None] * len(budgets), [None] * len(budgets)
        for w in windows.split(batch_size):
            for i, res in enumerate(search_many(self.duo, w.to(device), budgets)):
                totals[i] = res.route_totals if totals[i] is None else totals[i] + res.route_totals  # (R,) float64
                routes[i] = res.routes  # (R, L), the same set in the same order for every batch
        best = [(float(t.min()), r[int(t.argmin())].cpu()) for t, r in zip(totals, routes, strict=True)]
        shares = [route_share(self.cfg, c) for c in counts]
        if len(counts) == 2 and shares[0] < self.budget < shares[1]:  # a mix of the best below and the best above
            self.route, self.mix_route = best[0][1], best[1][1]
            self.mix = (self.budget - shares[0]) / (shares[1] - shares[0])
        else:  # one route: the best of those within 0.005 of the budget (or the one count there is)
            i = min(range(len(best)), key=lambda j: best[j][0])
            self.route = self.mix_route = best[i][1]
            self.mix = 0.0
        self.options.update(route=format_route(self.route), mix_route=format_route(self.mix_route) if self.mix else "", mix=self.mix)
        self.train(was)
        T = windows.shape[1]
        second = mixed_positions(torch.arange(T - 1), self.mix).double().mean() if self.mix else 0.0
        return float(
            route_share(self.cfg, counts_of(self.route)) * (1 - second) + route_share(self.cfg, counts_of(self.mix_route)) * second
        )


def counts_of(route: Tensor) -> tuple[int, int]:
    """(BIG, SMALL) layers of one route (L,)."""
    return int((route == Choice.BIG).sum()), int((route == Choice.SMALL).sum())

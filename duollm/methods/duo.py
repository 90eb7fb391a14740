"""`duo-random`: the Duo model as the repository trains it, random routing, then the best fixed route at the budget
(issue 21, entrant 1; the paper's stage 1, arXiv:2410.10846 §2).

Training: the existing `DuoLM`, each (token, layer) choice drawn afresh every forward with probabilities
`p_big, p_small, p_skip` (routing/sample.py `random_route`, as train/loop.py draws them; default 0.5/0.5/0), from the
entrant's own generator, seeded from torch's global one when the entrant is built (the arena seeds that).

Evaluation (`eval()`): one static route for every token, with `k` BIG layers and the rest SMALL, `k` the count whose
FFN FLOPs are nearest `budget` (a fraction of all-BIG's FFN FLOPs; the count moves in steps of 1/L of the range
between all-SMALL and all-BIG). `calibrate(windows)` picks the best such route on held-out windows, the shared oracle's
`fixed` route (oracle/search.py `search_many`: the route of the set with the lowest summed loss), and keeps it in
`options["route"]`, so `save_entrant` / `load_entrant` and decoding reproduce it. Until then the route spreads its
k BIG layers evenly over the depth. A static route is causal, and decodes through the Duo model's KV cache.

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


class DuoRandom(Entrant):
    """DuoLM trained under random routes, evaluated under one static route of k BIG layers (module docstring).

    Options: `budget` (fraction of all-BIG FFN FLOPs at evaluation), `p_big`, `p_small`, `p_skip` (the training
    mix), `route` (the evaluation route as B/S/- letters; "" = spread until `calibrate` chooses it)."""

    method = "duo-random"

    def __init__(self, cfg: DuoConfig, budget: float = 0.5, p_big: float = 0.5, p_small: float = 0.5, p_skip: float = 0.0, route: str = ""):
        super().__init__(cfg, budget=budget, p_big=p_big, p_small=p_small, p_skip=p_skip, route=route)
        if not 0 < budget <= 1:
            raise DuoError(f"duo-random: budget is a fraction of all-BIG's FFN FLOPs in (0, 1], got {budget}")
        random_route((1, 1, 1), p_big, p_small, p_skip, torch.Generator())  # DuoError for a bad mix
        self.p = (float(p_big), float(p_small), float(p_skip))
        self.budget = float(budget)  # the target; k BIG layers meet it to within a step of 1/L (big_layers_for_budget)
        self.k = big_layers_for_budget(cfg, budget)
        if route:
            try:
                fixed = parse_route(route, cfg.n_layer)
            except ValueError as e:
                raise DuoError(f"duo-random: {e}") from None
        else:
            fixed = spread_route(cfg.n_layer, self.k)
        self.register_buffer("route", fixed, persistent=False)  # (L,) uint8, on the host side of the forward
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

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache: KVCache | None = None) -> MethodOutput:
        """`ids` (B, T) int64; random routes in training, the static route under `eval()`."""
        B, T = ids.shape
        pos = 0 if cache is None else int(cache.pos)
        if self.training:
            route = random_route((B, T, self.cfg.n_layer), *self.p, self.gen)  # (B, T, L) on the host
        else:
            route = self.route.cpu()  # (L,)
        out = self.duo(ids, route=route, targets=targets, cache=cache)
        flops = self.token_flops(route, torch.arange(pos, pos + T).expand(B, T)).to(ids.device)  # (B, T)
        stats = {name.lower(): float((route == c).float().mean()) for name, c in Choice.__members__.items()}
        return MethodOutput(logits=out.logits, loss=out.loss, aux=torch.zeros((), device=ids.device), flops=flops, stats=stats)

    @torch.no_grad()
    def calibrate(self, windows: Tensor, batch_size: int = 16) -> float:
        """Choose the evaluation route: of the routes with k BIG layers, the one with the lowest summed next-token loss
        over `windows` (N, T) (held-out text, not the evaluation's). Keeps it in `options["route"]`; returns its
        FFN FLOPs as a fraction of all-BIG's."""
        was = self.training
        self.eval()
        device = self.duo.embed.weight.device
        totals, routes = None, None
        for w in windows.split(batch_size):
            res = search_many(self.duo, w.to(device), [Budget.exactly_big(self.k)])[0]
            totals = res.route_totals if totals is None else totals + res.route_totals  # (R,) float64
            routes = res.routes  # (R, L), the same set in the same order for every batch
        self.route = routes[int(totals.argmin())].cpu()
        self.options["route"] = format_route(self.route)
        self.train(was)
        ffn = self.cfg.cost().ffn  # (L, 3)
        return float(ffn[torch.arange(self.cfg.n_layer), self.route.long()].sum() / ffn[:, Choice.BIG].sum())

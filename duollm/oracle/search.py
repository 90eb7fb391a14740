"""The shared-route oracle: exhaustive, exact, and walked as a tree (docs/design.md §2; the paper's oracle,
arXiv:2410.10846 §2).

For every route r of a budget's set, the whole sequence runs with r applied to every token; token t's
oracle loss is min_r loss_t(r) and its route the argmin (ties: the first route in `Budget.routes` order).

Speed: routes that share their first j choices share the first j layers, so the search walks the route
tree depth first, keeping one hidden state per depth. At a node, attention runs once (it does not depend
on the node's FFN choice), then each child's FFN runs on the same normalised input; the vocabulary head
runs only at the leaves. For 2^L routes that is Σ_j 2^j attention passes and 2^(j+1) FFN passes instead
of 2^L · L of each. Several budgets are searched in one walk: a leaf updates
every budget whose set holds its route, and a subtree is entered only if some budget can still be met.

Reference for tests: `brute_force`, one plain forward per route.
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.model.transformer import DuoLM
from duollm.oracle.beam import causal_beam, shared_beam
from duollm.oracle.causal import causal_search
from duollm.oracle.groups import Groups
from duollm.oracle.loss import Best, SearchResult, head_loss, token_loss
from duollm.routing.budget import Budget, Schedule, per_position
from duollm.routing.cost import CostTable, route_cost
from duollm.routing.route import N_CHOICES, check_route


@torch.no_grad()
def route_loss(model: DuoLM, ids: Tensor, route: Tensor) -> Tensor:
    """Next-token loss (B, T-1) of a plain forward with `route` ((L,) or (B, T, L)), through the same head as
    the tree walk (`head_loss`), so that a route's loss here and at a leaf of the walk agree to the last bit."""
    T, L = ids.shape[1], model.cfg.n_layer
    check_route(route, L, tuple(ids.shape))
    route = route.to(ids.device) if route.dim() == 3 else route.cpu()
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    h = model.embed(ids)
    for j, blk in enumerate(model.blocks):
        h = blk(h, route[..., j], cos, sin)
    return head_loss(model, h, ids)


def walk_flops(routes: Tensor, table: CostTable) -> tuple[float, float]:
    """Forward FLOPs per token of searching `routes` (R, L): (tree walk, one forward per route), from cost.py.

    The walk runs layer j's attention once per distinct prefix of length j, its FFN once per distinct prefix
    of length j+1 (by that prefix's last choice), and the head once per route."""
    R, L = routes.shape
    tree = R * table.head
    for j in range(L):
        tree += len(torch.unique(routes[:, :j], dim=0)) * float(table.attn[j]) if j else float(table.attn[0])
        kids = torch.unique(routes[:, : j + 1], dim=0)[:, -1].long()  # last choice of each distinct prefix
        tree += float(table.ffn[j, kids].sum())
    naive = float(route_cost(routes, table).sum())  # (R,) route costs, summed
    return tree, naive


@torch.no_grad()
def search_many(model: DuoLM, ids: Tensor, budgets: list[Budget], keep: bool = False, groups: Groups | None = None) -> list[SearchResult]:
    """Shared-route oracle for several budgets in one tree walk; one SearchResult per budget.

    `keep=True` also returns every route's per-token loss, `candidates` (B, T-1, R), in route order. `groups`
    (groups.py): the walk branches once per group of layers, which share one choice."""
    L = model.cfg.n_layer
    groups = groups or Groups.of(L)
    for b in budgets:
        b.check(L)
        groups.check(b)
    B, T = ids.shape
    options = sorted({c for b in budgets for c in b.options})
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    best = [Best(B, T, L, ids.device, keep) for _ in budgets]
    route = torch.zeros(L, dtype=torch.uint8)  # (L,) the current prefix, on the host
    counts = torch.zeros(N_CHOICES, dtype=torch.long)  # (3,) choices used by the prefix
    starts = groups.starts

    def visit(u: int, h: Tensor) -> None:
        if u == groups.n_units:  # leaf: one whole-sequence route, scored by every budget that holds it
            loss = head_loss(model, h, ids)  # (B, T-1)
            for b, acc in zip(budgets, best, strict=True):
                if b.contains(counts):
                    acc.update(loss, route)
            return
        j, size = starts[u], groups.sizes[u]
        blk = model.blocks[j]
        a = h + blk.attn(blk.attn_norm(h), cos, sin)  # (B, T, C): shared by every child
        x = blk.ffn_norm(a)  # (B, T, C)
        for c in options:
            counts[c] += size
            if any(c in b.options and groups.can_finish(b, counts, u + 1) for b in budgets):
                route[j : j + size] = c
                child = a + blk.ffn(x, route[j])  # child state (B, T, C)
                for i in range(j + 1, j + size):  # the group's other layers take the same choice
                    nxt = model.blocks[i]
                    ai = child + nxt.attn(nxt.attn_norm(child), cos, sin)
                    child = ai + nxt.ffn(nxt.ffn_norm(ai), route[i])
                visit(u + 1, child)
            counts[c] -= size

    visit(0, model.embed(ids))
    return [acc.result() for acc in best]


def search(
    model: DuoLM, input_ids: Tensor, budget: Budget | Schedule, mode: str = "shared", beam: int = 0, groups: int = 1
) -> SearchResult:
    """The oracle of docs/design.md §4: per-token best routes under `budget` (a Budget, or a Schedule over positions).

    `mode="shared"`: one route for the whole sequence, minimum over the route set (the paper's oracle).
    `mode="causal"`: left to right, each token's best route given the routes chosen before it (causal.py).
    `beam=W` (W >= 1): a beam search of width W over the route tree instead of the whole set (beam.py); 0 = exhaustive.
    `groups=g`: g consecutive layers share one choice (groups.py; 0 or 1 = none); budgets still count layers.
    """
    if mode not in ("shared", "causal"):
        raise ValueError(f"oracle mode must be 'shared' or 'causal', got {mode!r}")
    if beam < 0:
        raise ValueError(f"beam width must be >= 0 (0 = exhaustive), got {beam}")
    units = Groups.of(model.cfg.n_layer, groups)
    if mode == "causal":
        return causal_beam(model, input_ids, budget, beam, units) if beam else causal_search(model, input_ids, budget, groups=units)
    if beam:
        if isinstance(budget, Budget):
            return shared_beam(model, input_ids, budget, beam, units)
        return _shared_schedule(model, input_ids, budget, lambda bs: [shared_beam(model, input_ids, b, beam, units) for b in bs])
    if isinstance(budget, Budget):
        return search_many(model, input_ids, [budget], groups=units)[0]
    return _shared_schedule(model, input_ids, budget, lambda bs: search_many(model, input_ids, bs, groups=units))


def beam_search(
    model: DuoLM, input_ids: Tensor, budget: Budget | Schedule, width: int, mode: str = "shared", groups: int = 1
) -> SearchResult:
    """`search` by a beam of `width` >= 1 over the route tree (beam.py): the same result, restricted; exact when the
    width covers every route."""
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    return search(model, input_ids, budget, mode, beam=width, groups=groups)


@torch.no_grad()
def _shared_schedule(model: DuoLM, ids: Tensor, schedule: Schedule, searcher) -> SearchResult:
    """A schedule in shared mode: each position takes the oracle of its own budget (`searcher(budgets)` → one
    SearchResult each). `fixed` is the best single route per group of positions that share a budget (fixed_route
    is (T-1, L)), among the routes the search evaluated, and fixed_loss is that static per-position route run as a
    policy, so unlike the shared oracle it is realisable and may beat it on a token."""
    schedule.check(model.cfg.n_layer)
    per = per_position(schedule, ids.shape[1] - 1)
    uniq = sorted(set(per), key=per.index)
    res = dict(zip(uniq, searcher(uniq), strict=True))
    loss, route = torch.empty_like(res[uniq[0]].loss), torch.empty_like(res[uniq[0]].route)
    fixed = torch.empty(len(per), model.cfg.n_layer, dtype=torch.uint8)  # (T-1, L)
    for b, r in res.items():
        at = torch.tensor([t for t, p in enumerate(per) if p == b])  # positions with this budget
        loss[:, at], route[:, at] = r.loss[:, at], r.route[:, at]
        fixed[at] = r.routes[r.route_pos_totals[:, at].sum(1).argmin()]
    full = torch.cat([fixed, fixed[-1:]]).expand(ids.shape[0], -1, -1)  # (B, T, L): the last token's route is unused
    fixed_loss = route_loss(model, ids, full)
    return SearchResult(loss, route, fixed, fixed_loss, max(r.n_routes for r in res.values()))


@torch.no_grad()
def brute_force(model: DuoLM, ids: Tensor, budget: Budget) -> tuple[Tensor, Tensor, Tensor]:
    """Reference: one plain forward per route. Returns (per-route losses (R, B, T-1), routes (R, L), argmin (B, T-1))."""
    routes = budget.routes(model.cfg.n_layer)  # (R, L)
    losses = torch.stack([token_loss(model(ids, route=r).logits, ids) for r in routes])  # (R, B, T-1)
    return losses, routes, losses.argmin(0)  # argmin returns the first minimum

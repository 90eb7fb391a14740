"""Beam search over the route tree: the shared and the causal oracle when the route set is too large to search
whole (30 layers: C(30, 15) routes at half BIG).

The tree is walked unit by unit (a unit is one layer, or a group of layers sharing one choice: groups.py). At each
depth every token keeps the `width` partial routes (prefixes) with the lowest *score*; the children of the
prefixes any token keeps are scored, and so on to the leaves, where each token takes its lowest-loss route (ties:
the first in `Budget.routes` order).

The score of a prefix is the loss of a real route: the prefix completed *greedily* (`Groups.complete`): at each
remaining unit, the first choice of a preference order that still lets the route meet the budget. With several
completions (`completions=("big-first", "big-last")`) the score is their minimum, token by token. Why this score:

- it is an upper bound that some route of the budget attains, so every score is a loss the oracle could report,
  and the beam's answer is never worse than the best completion it scored;
- greedy completions are *consistent*: the completion of p + c, where c is the first choice of p's completion, is
  the rest of p's completion. So that child inherits its parent's score without any work (one child in two for
  big/small), and a token's best score never rises from one depth to the next: the beam ends at or below every
  score it has seen;
- it needs no training and no extra pass, and it respects the budget by construction.

Shared mode (`shared_beam`): a prefix runs the whole sequence (B, T, C), as in the exhaustive tree walk, with the
same operations in the same order, so a route's loss here equals its loss at the walk's leaf to the last bit; with
`width` at least the number of routes every prefix is kept and the result *is* the exhaustive search's. Causal mode
(`causal_beam`): token by token against a KV cache of the routes already chosen, as causal.py, every prefix of the
batch's union as one batch; the winners' keys and values are recomputed for the cache, so it equals the exhaustive
causal oracle to rounding (not to the bit) when the width covers every route.

Work: a token's beam scores at most width × options children per unit (`groups.beam_work`), but a batch runs the
union of what its tokens keep, each prefix over the whole batch. Tokens disagree: at 12 layers a batch of 16 windows
of 128 tokens keeps nearly the whole tree even at width 1, and the exhaustive walk, which shares prefixes depth
first, is then as fast. The beam pays where the tree cannot be walked; fewer windows per batch keep the union small.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from duollm.model.transformer import DuoLM
from duollm.oracle.causal import _attend
from duollm.oracle.groups import Groups
from duollm.oracle.loss import Best, SearchResult, head_loss, rows_loss
from duollm.routing.budget import Budget, Schedule, per_position
from duollm.routing.route import N_CHOICES, Choice

PREFER = {  # completion name → the order in which a greedy completion tries the choices
    "big-first": (Choice.BIG, Choice.SMALL, Choice.SKIP),  # spend the counted BIG layers as early as the budget allows
    "big-last": (Choice.SKIP, Choice.SMALL, Choice.BIG),  # ... as late as it allows
}
COMPLETIONS = ("big-first", "big-last")  # the default score: the better of the two, per token


def check_completions(completions: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Completion names → preference orders; ValueError naming an unknown one."""
    bad = [c for c in completions if c not in PREFER]
    if bad or not completions:
        raise ValueError(f"beam completions must be among {', '.join(PREFER)}, got {', '.join(completions) or 'none'}")
    return [PREFER[c] for c in completions]


def _choice(c: int) -> Tensor:
    return torch.tensor(c, dtype=torch.uint8)  # 0-d: one choice for every token, read on the host (as the walk's)


@dataclass
class _Node:
    """A prefix of the shared beam: its unit choices, layer counts, state, completions and their scores."""

    units: tuple[int, ...]  # the choice of each unit so far
    counts: list[int]  # (3,) layers per Choice so far
    comps: list[tuple[int, ...]]  # per completion: the choices of the remaining units
    scores: list[Tensor] = field(default_factory=list)  # per completion: (B, T-1) loss of prefix + completion
    h: Tensor | None = None  # (B, T, C) the residual stream after the prefix; made when needed
    parent: _Node | None = None

    def score(self) -> Tensor:
        """(B, T-1): the lowest of its completions' losses, token by token."""
        out = self.scores[0]
        for s in self.scores[1:]:
            out = torch.minimum(out, s)
        return out


def _layer(blk, h: Tensor, c: int, cos: Tensor, sin: Tensor) -> Tensor:
    """One layer on the whole sequence, with the tree walk's operations (search.py): (B, T, C) → (B, T, C)."""
    a = h + blk.attn(blk.attn_norm(h), cos, sin)
    return a + blk.ffn(blk.ffn_norm(a), _choice(c))


@torch.no_grad()
def shared_beam(
    model: DuoLM, ids: Tensor, budget: Budget, width: int, groups: Groups | None = None, completions: tuple[str, ...] = COMPLETIONS
) -> SearchResult:
    """Shared-route oracle by beam search: loss (B, T-1), route (B, T-1, L) as `search_many`; `routes` and
    `route_pos_totals` hold the routes it evaluated (each on every token of the batch), `fixed_route` the best of
    them, `n_routes` their number."""
    L = model.cfg.n_layer
    groups = groups or Groups.of(L)
    prefer = _check(width, groups, L, completions, [budget])
    B, T = ids.shape
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    starts, U = groups.starts, groups.n_units
    seen = Best(B, T, L, ids.device)  # every route evaluated: its totals, and the best single route (fixed)

    def finish(h: Tensor, unit: int, prefix: tuple[int, ...], rest: tuple[int, ...]) -> Tensor:
        """Loss (B, T-1) of the route prefix + rest, from the state h after `unit` units."""
        for u, c in zip(range(unit, U), rest, strict=True):
            for j in range(starts[u], starts[u] + groups.sizes[u]):
                h = _layer(model.blocks[j], h, c, cos, sin)
        loss = head_loss(model, h, ids)
        seen.update(loss, groups.expand(torch.tensor(prefix + rest, dtype=torch.uint8)))
        return loss

    def state(node: _Node) -> Tensor:
        """The node's residual stream (B, T, C), from its parent's (kept only for the nodes the beam keeps, so that
        memory holds two depths' kept prefixes, not every child scored)."""
        if node.h is not None:
            return node.h
        u, h = len(node.units) - 1, node.parent.h
        for j in range(starts[u], starts[u] + groups.sizes[u]):
            h = _layer(model.blocks[j], h, node.units[-1], cos, sin)
        return h

    root = _Node((), [0] * N_CHOICES, [groups.complete(budget, [0] * N_CHOICES, 0, p) for p in prefer], h=model.embed(ids))
    done: dict[tuple[int, ...], Tensor] = {}  # two completions may be the same route: score it once
    for comp in root.comps:
        if comp not in done:
            done[comp] = finish(root.h, 0, (), comp)
        root.scores.append(done[comp])
    nodes = [root]
    for u in range(U):
        children = []
        for node in nodes:
            for c in budget.options:
                counts = list(node.counts)
                counts[c] += groups.sizes[u]
                if not groups.can_finish(budget, counts, u + 1):
                    continue
                child = _Node(node.units + (c,), counts, [groups.complete(budget, counts, u + 1, p) for p in prefer], parent=node)
                scored: dict[tuple[int, ...], Tensor] = {}
                for comp, pcomp, pscore in zip(child.comps, node.comps, node.scores, strict=True):
                    if pcomp[0] == c:  # consistent: the parent's completion is this child's prefix + completion
                        scored[comp] = pscore
                h = None
                for comp in child.comps:
                    if comp not in scored:
                        h = state(child) if h is None else h
                        scored[comp] = finish(h, u + 1, child.units, comp)
                    child.scores.append(scored[comp])
                children.append(child)
        scores = torch.stack([ch.score() for ch in children])  # (N, B, T-1), N children in route order
        if u == U - 1:
            break
        keep = torch.zeros(len(children), dtype=torch.bool)
        keep[scores.argsort(dim=0, stable=True)[:width].unique()] = True  # each token's `width` best; ties: the first
        nodes = [ch for ch, k in zip(children, keep.tolist(), strict=True) if k]
        for node in nodes:
            node.h = state(node)
        for node in nodes:
            node.parent = None  # the parents' states can go
    best = scores.argmin(0)  # (B, T-1): the first minimum, as the walk's strict update
    leaves = groups.expand(torch.tensor([ch.units for ch in children], dtype=torch.uint8))  # (R', L)
    res = seen.result()
    res.loss = scores.gather(0, best[None]).squeeze(0)
    res.route = leaves.to(ids.device)[best]
    return res


def _check(width: int, groups: Groups, n_layer: int, completions: tuple[str, ...], budgets) -> list[tuple[int, ...]]:
    """ValueError (DuoError for a budget the groups cannot meet) before any work; → the completions' orders."""
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    if groups.n_layer != n_layer:
        raise ValueError(f"groups of {groups} layers do not cover the model's {n_layer} layers")
    for b in budgets:
        groups.check(b)
    return check_completions(completions)


def _run_layers(
    model: DuoLM, x: Tensor, j0: int, choices: Tensor, caches, t: int, cos: Tensor, sin: Tensor, parent: Tensor | None = None
) -> Tensor:
    """Candidates of token t through layers j0 .. j0+n-1 with per-candidate choices (M, n), each layer's attention
    against the cache of tokens < t (causal.py's `_attend`). x is (M, B, C), or with `parent` (M,) the (N, B, C)
    states the candidates grow from: the first layer's attention then runs once per parent, as in causal.py's tree.
    → (M, B, C)."""
    for i in range(choices.shape[1]):
        blk, (kc, vc) = model.blocks[j0 + i], caches[j0 + i]
        att, _, _ = _attend(blk, blk.attn_norm(x), kc, vc, t, cos, sin)
        a = x + att
        u = blk.ffn_norm(a)
        if i == 0 and parent is not None:
            a, u = a[parent], u[parent]
        x = a.clone()
        for c, name in ((Choice.SMALL, "small"), (Choice.BIG, "big")):  # SKIP adds nothing
            rows = (choices[:, i] == c).nonzero().squeeze(1)
            if len(rows):
                x[rows] += getattr(blk.ffn, name)(u[rows])
    return x


@torch.no_grad()
def causal_beam(
    model: DuoLM,
    ids: Tensor,
    budget: Budget | Schedule,
    width: int,
    groups: Groups | None = None,
    completions: tuple[str, ...] = COMPLETIONS,
) -> SearchResult:
    """Causal oracle by beam search: left to right, each token's route by a beam over its route tree, given the
    routes chosen for the tokens before it. → loss (B, T-1), route (B, T-1, L); `n_routes`: the most routes one
    position evaluated."""
    L, cfg = model.cfg.n_layer, model.cfg
    groups = groups or Groups.of(L)
    B, T = ids.shape
    per = per_position(budget, T - 1)
    prefer = _check(width, groups, L, completions, set(per))
    dev = ids.device
    shape, dtype = (B, cfg.n_kv_head, T - 1, cfg.d_model // cfg.n_head), model.embed.weight.dtype
    caches = [(torch.empty(shape, device=dev, dtype=dtype), torch.empty(shape, device=dev, dtype=dtype)) for _ in range(L)]
    loss = torch.empty(B, T - 1, device=dev)
    route = torch.empty(B, T - 1, L, dtype=torch.uint8, device=dev)
    most = 0
    for t in range(T - 1):
        beam = _TokenBeam(model, ids, t, per[t], groups, prefer, caches)
        loss[:, t], route[:, t] = beam.run(width)
        _write_cache(model, beam.x0, route[:, t], caches, t, beam.cos, beam.sin)
        most = max(most, beam.evaluated)
    return SearchResult(loss, route, None, None, most)


class _TokenBeam:
    """The beam over token t's route tree, for every row of the batch, against the caches of tokens < t. The nodes
    of a depth are parallel lists (unit choices, layer counts, completions, per completion a (B,) score) and one
    state tensor (N, B, C); a depth's nodes are the union of what the rows keep."""

    def __init__(self, model: DuoLM, ids: Tensor, t: int, budget: Budget, groups: Groups, prefer, caches):
        self.model, self.t, self.budget, self.groups, self.prefer, self.caches = model, t, budget, groups, prefer, caches
        self.target = ids[:, t + 1]  # (B,)
        self.cos, self.sin = model.rope_cos[t : t + 1], model.rope_sin[t : t + 1]
        self.x0 = model.embed(ids[:, t]).unsqueeze(0)  # (1, B, C): the root
        self.evaluated = 0  # routes scored

    def finish(self, x: Tensor, unit: int, rests: list[tuple[int, ...]]) -> Tensor:
        """Losses (M, B) of completing candidates x (M, B, C), after `unit` units, with rests[m] (unit choices)."""
        g, U = self.groups, self.groups.n_units
        if unit < U:
            lay = g.expand(torch.tensor(rests, dtype=torch.uint8).view(len(rests), U - unit), unit).to(x.device)
            x = _run_layers(self.model, x, g.starts[unit], lay, self.caches, self.t, self.cos, self.sin)
        self.evaluated += len(rests)
        return rows_loss(self.model, x.reshape(-1, x.shape[-1]), self.target.repeat(len(x))).view(len(x), -1)

    def complete(self, counts: list[int], unit: int) -> list[tuple[int, ...]]:
        return [self.groups.complete(self.budget, counts, unit, p) for p in self.prefer]

    def run(self, width: int) -> tuple[Tensor, Tensor]:
        """→ (loss (B,), route (B, L)): each row's lowest-loss leaf, the first in route order on ties."""
        g, b = self.groups, self.budget
        comps0 = self.complete([0] * N_CHOICES, 0)
        uniq = list(dict.fromkeys(comps0))  # two completions may be the same route: score it once
        s0 = self.finish(self.x0.expand(len(uniq), -1, -1), 0, uniq)
        units, counts, comps, scores = [()], [[0] * N_CHOICES], [comps0], [[s0[uniq.index(c)] for c in comps0]]
        x = self.x0
        for u in range(g.n_units):
            kids = [(i, c) for i in range(len(units)) for c in b.options if g.can_finish(b, _add(counts[i], c, g.sizes[u]), u + 1)]
            parent = torch.tensor([i for i, _ in kids], device=x.device)
            lay = torch.tensor([[c] * g.sizes[u] for _, c in kids], dtype=torch.uint8, device=x.device)  # (N', size)
            xk = _run_layers(self.model, x, g.starts[u], lay, self.caches, self.t, self.cos, self.sin, parent)  # (N', B, C)
            k_counts = [_add(counts[i], c, g.sizes[u]) for i, c in kids]
            k_comps = [self.complete(cnt, u + 1) for cnt in k_counts]
            k_scores = self.score(xk, u + 1, [(comps[i], scores[i], c) for i, c in kids], k_comps)
            s = torch.stack([torch.stack(row).min(0).values for row in k_scores])  # (N', B)
            if u == g.n_units - 1:
                break
            keep = torch.zeros(len(kids), dtype=torch.bool)
            keep[s.argsort(dim=0, stable=True)[:width].unique().cpu()] = True  # each row's `width` best; ties: the first
            at = keep.nonzero().squeeze(1).tolist()
            units = [units[kids[n][0]] + (kids[n][1],) for n in at]
            counts, comps, scores = [k_counts[n] for n in at], [k_comps[n] for n in at], [k_scores[n] for n in at]
            x = xk[torch.tensor(at, device=x.device)]
        leaves = g.expand(torch.tensor([units[i] + (c,) for i, c in kids], dtype=torch.uint8)).to(x.device)  # (R', L)
        best = s.argmin(0)  # (B,): the first minimum
        return s.gather(0, best[None]).squeeze(0), leaves[best]

    def score(self, xk: Tensor, unit: int, parents, k_comps) -> list[list[Tensor]]:
        """Per child, per completion, its (B,) score: the parent's where the child follows the parent's completion
        (consistency), else the loss of its own completion, all of those scored as one batch."""
        rows: list[list[Tensor | int]] = []
        todo: dict[tuple[int, tuple[int, ...]], int] = {}  # (child, completion) → its row in the batch
        for n, ((pcomps, pscores, c), comps) in enumerate(zip(parents, k_comps, strict=True)):
            have = {comp: ps for comp, pc, ps in zip(comps, pcomps, pscores, strict=True) if pc[0] == c}
            rows.append([have[comp] if comp in have else todo.setdefault((n, comp), len(todo)) for comp in comps])
        if todo:
            got = self.finish(xk[torch.tensor([n for n, _ in todo], device=xk.device)], unit, [comp for _, comp in todo])  # (M, B)
            rows = [[got[r] if isinstance(r, int) else r for r in row] for row in rows]
        return rows


def _add(counts: list[int], c: int, size: int) -> list[int]:
    """Layer counts (3,) after `size` more layers take choice c."""
    out = list(counts)
    out[c] += size
    return out


def _write_cache(model: DuoLM, x: Tensor, route: Tensor, caches, t: int, cos: Tensor, sin: Tensor) -> None:
    """Token t's keys and values under each row's chosen route (B, L), into the caches: x (1, B, C) the embedding."""
    for j, blk in enumerate(model.blocks):
        kc, vc = caches[j]
        att, k, v = _attend(blk, blk.attn_norm(x), kc, vc, t, cos, sin)
        kc[:, :, t], vc[:, :, t] = k[0], v[0]
        a = x + att
        u = blk.ffn_norm(a)
        x = a.clone()
        for c, name in ((Choice.SMALL, "small"), (Choice.BIG, "big")):
            rows = (route[:, j] == c).nonzero().squeeze(1)
            if len(rows):
                x[0, rows] += getattr(blk.ffn, name)(u[0, rows])

"""A whole oracle study over an evaluation set: every budget, both oracles, and the baselines, in batches.

`sweep` takes this rank's windows (N, T), runs, in order,
  1. all-big and all-small;
  2. one shared-route tree walk per batch for all budgets at once (their route sets' union), or with a beam
     width one beam search per batch and budget (beam.py);
  3. `fixed`: the route with the lowest summed loss over the whole set (totals summed over batches and
     ranks), then one forward with it per batch; with a beam, among the candidates the batches' beams found
     (each batch's best route by its own totals, for every group of positions), each run on every window;
  4. the causal oracle, per budget and batch (if asked);
  5. random best-of-N: trial i draws every token's route from its own generator (seed, budget, trial,
     rank, batch), so the best trial, chosen on totals over all ranks, is drawn again and run once more
     instead of keeping N trials of routes;
and returns this rank's per-token results; `gather` brings them to rank 0. With route groups (groups.py) every
phase keeps to the grouped routes: the oracles search them, `fixed` is one, random trials draw from them.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from duollm.model.transformer import DuoLM
from duollm.oracle.beam import causal_beam, shared_beam
from duollm.oracle.causal import causal_search
from duollm.oracle.groups import ENUMERATE_MAX, Groups, beam_work
from duollm.oracle.search import route_loss, search_many
from duollm.routing.budget import Budget, Schedule, per_position
from duollm.routing.route import Choice
from duollm.routing.sample import draw_routes


@dataclass
class SweepResult:
    """Per-token losses (n, T-1) and routes (n, T-1, L) by column name, and per-budget summaries."""

    loss: dict[str, Tensor] = field(default_factory=dict)  # "all-big", and "MODE/4" for MODE shared, causal, fixed, random
    route: dict[str, Tensor] = field(default_factory=dict)  # "MODE/4" for MODE shared, causal, random
    fixed: dict[str, Tensor] = field(default_factory=dict)  # label → (L,) route, or (T-1, L) for a schedule
    trials: dict[str, list[float]] = field(default_factory=dict)  # label → mean loss of each random trial
    n_routes: dict[str, int] = field(default_factory=dict)  # label → route-set size (largest per position)


def _sum_ranks(x: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
    return x


def walk_budgets(budgets: dict[str, Budget | Schedule], n_pos: int) -> list[Budget]:
    """The distinct budgets one shared walk serves (a schedule contributes the budget of each of its positions)."""
    return sorted({p for b in budgets.values() for p in per_position(b, n_pos)}, key=str)


def walk_leaves(uniq: list[Budget], n_layer: int, groups: Groups | None = None) -> int:
    """Distinct routes (leaves) of a walk over the union of these budgets' route sets. Counted, not listed, when
    the budgets share their options and counted choices (those of one --options): then budgets of different
    counts hold different routes, and `free` holds them all."""
    groups = groups or Groups.of(n_layer)
    if len({b.options for b in uniq}) == 1 and len({tuple(b.targets()) for b in uniq if b.targets()}) <= 1:
        free = [b for b in uniq if not b.targets()]
        return groups.count(free[0]) if free else sum(groups.count(b) for b in set(uniq))
    return len(torch.unique(torch.cat([groups.routes(b) for b in uniq]), dim=0))


def shared_work(uniq: list[Budget], n_layer: int, beam: int = 0, groups: Groups | None = None) -> int:
    """Routes the shared phase evaluates per token: the walk's leaves, or the beams' work (one beam per budget)."""
    groups = groups or Groups.of(n_layer)
    return sum(beam_work(groups, b, beam) for b in uniq) if beam else walk_leaves(uniq, n_layer, groups)


def draw(budget: Budget | Schedule, groups: Groups, B: int, T: int, gen: torch.Generator) -> Tensor:
    """Random best-of-N's routes (B, T, L): every token a route drawn uniformly from its position's route set.
    Ungrouped sets small enough to list draw as `draw_routes` always has; grouped or larger ones draw through
    `Groups.sample` (counts, no list)."""
    L = groups.n_layer
    per = per_position(budget, T - 1)
    if groups.trivial and all(len(p.options) ** L <= ENUMERATE_MAX for p in set(per)):
        return draw_routes(budget, L, B, T, gen)
    per = per + per[-1:]  # (T,): the last token (nothing to predict) repeats the last budget
    out = torch.empty(B, T, L, dtype=torch.uint8)
    for b in sorted(set(per), key=per.index):
        at = torch.tensor([t for t, p in enumerate(per) if p == b])
        out[:, at] = groups.sample(b, B * len(at), gen).view(B, len(at), L)
    return out


def work(
    budgets: dict[str, Budget | Schedule],
    n_layer: int,
    n_windows: int,
    n_pos: int,
    modes: tuple[str, ...],
    n_random: int,
    causal_labels: Collection[str] | None = None,
    random_labels: Collection[str] | None = None,
    beam: int = 0,
    groups: int = 1,
) -> dict[str, int]:
    """How much a sweep of `n_windows` × `n_pos` predicted tokens will do, in route·tokens, per phase (a beam's:
    the routes one token's beam scores, `beam_work`)."""
    n_tokens = n_windows * n_pos
    units = Groups.of(n_layer, groups)
    out = {"shared": shared_work(walk_budgets(budgets, n_pos), n_layer, beam, units) * n_tokens}
    n_rand = sum(1 for label in budgets if random_labels is None or label in random_labels)
    out["baselines"] = (2 + len(budgets) + n_rand * (n_random + 1)) * n_tokens
    if "causal" in modes:
        causal = [b for label, b in budgets.items() if causal_labels is None or label in causal_labels]
        per_token = (lambda p: beam_work(units, p, beam)) if beam else units.count
        out["causal"] = sum(max(per_token(p) for p in set(per_position(b, n_pos))) for b in causal) * n_tokens
    return out


@torch.no_grad()
def sweep(
    model: DuoLM,
    windows: Tensor,
    budgets: dict[str, Budget | Schedule],
    modes: tuple[str, ...] = ("shared",),
    n_random: int = 0,
    seed: int = 0,
    batch_size: int = 16,
    rank: int = 0,
    tick: Callable[[int], None] = lambda n: None,
    causal_labels: Collection[str] | None = None,
    causal_batch: int = 0,
    random_labels: Collection[str] | None = None,
    phase_done: Callable[[SweepResult, str], None] = lambda res, phase: None,
    beam: int = 0,
    groups: int = 1,
) -> SweepResult:
    """Run the study on this rank's windows (N, T) int64; `tick(route·tokens)` reports progress.

    Random best-of-N runs for the budgets named in `random_labels` (None = all), and the causal oracle (mode
    "causal") for those named in `causal_labels` (None = all), on batches of
    `causal_batch` windows (0 = batch_size): it steps through positions one at a time, so it wants far more
    windows per step than a forward does before the GPU is busy. `beam` (>= 1): both oracles by beam search of
    that width (beam.py) instead of the exhaustive one; `groups`: g consecutive layers share one choice (groups.py)."""
    model.eval()
    L = model.cfg.n_layer
    units = Groups.of(L, groups)
    dev = next(model.parameters()).device
    N, T = windows.shape
    batches = [windows[i : i + batch_size] for i in range(0, N, batch_size)]
    out = SweepResult()

    def run(route_of: Callable[[int, Tensor], Tensor], count: bool = True) -> Tensor:  # one forward per batch → (N, T-1) on CPU
        parts = []
        for i, x in enumerate(batches):
            x = x.to(dev)
            parts.append(route_loss(model, x, route_of(i, x)).cpu())
            if count:
                tick(x[:, 1:].numel())
        return torch.cat(parts) if parts else torch.empty(0, T - 1)

    out.loss["all-big"] = run(lambda i, x: torch.full((L,), Choice.BIG, dtype=torch.uint8))
    out.loss["all-small"] = run(lambda i, x: torch.full((L,), Choice.SMALL, dtype=torch.uint8))

    # 2. shared oracle: one walk per batch for the union of all budgets (a schedule contributes each of its budgets),
    # or one beam search per batch and budget
    per = {label: per_position(b, T - 1) for label, b in budgets.items()}
    uniq = walk_budgets(budgets, T - 1)
    leaves = shared_work(uniq, L, beam, units)
    best = {b: ([], []) for b in uniq}  # budget → (losses, routes) per batch
    if beam:
        routes = _beam_shared(model, batches, uniq, per, beam, units, best, lambda x: tick(leaves * x[:, 1:].numel()))
        # the candidates for `fixed`, each run on every window (and rank): (M, T-1) totals per budget
        totals = {b: _sum_ranks(torch.stack([run(lambda i, x, r=r: r, count=False).double().sum(0) for r in routes[b]])) for b in uniq}
    else:
        totals = {b: None for b in uniq}  # budget → (R, T-1) summed loss of each route
        routes = {b: units.routes(b) for b in uniq}
        for x in batches:
            res = search_many(model, x.to(dev), uniq, groups=units)
            for b, r in zip(uniq, res, strict=True):
                best[b][0].append(r.loss.cpu()), best[b][1].append(r.route.cpu())
                totals[b] = r.route_pos_totals if totals[b] is None else totals[b] + r.route_pos_totals
            tick(leaves * x[:, 1:].numel())
        for b in uniq:
            totals[b] = _sum_ranks(totals[b]) if totals[b] is not None else torch.zeros(len(routes[b]), T - 1, dtype=torch.float64)
    for label, ps in per.items():
        loss, route = torch.empty(N, T - 1), torch.empty(N, T - 1, L, dtype=torch.uint8)
        fixed = torch.empty(T - 1, L, dtype=torch.uint8)
        for b in set(ps):
            at = torch.tensor([t for t, p in enumerate(ps) if p == b])
            if N:
                loss[:, at], route[:, at] = torch.cat(best[b][0])[:, at], torch.cat(best[b][1])[:, at]
            fixed[at] = routes[b][totals[b][:, at].sum(1).argmin()]
        out.loss[f"shared/{label}"], out.route[f"shared/{label}"] = loss, route
        out.n_routes[label] = max(units.count(b) for b in set(ps))
        # 3. fixed: the best single route (per group of positions for a schedule), run as a policy
        static = isinstance(budgets[label], Budget)
        out.fixed[label] = fixed[0] if static else fixed
        full = torch.cat([fixed, fixed[-1:]])  # (T, L)
        out.loss[f"fixed/{label}"] = run(lambda i, x, f=full, s=static: f[0] if s else f.expand(len(x), -1, -1))

    phase_done(out, "fixed")  # the results so far, e.g. to save them before the long phases

    # 4. causal oracle
    if "causal" in modes:
        cb = causal_batch or batch_size
        for label, b in budgets.items():
            if causal_labels is not None and label not in causal_labels:
                continue
            losses, rts = [], []
            per_token = max(beam_work(units, p, beam) for p in set(per[label])) if beam else out.n_routes[label]
            for x in (windows[i : i + cb] for i in range(0, N, cb)):
                r = causal_beam(model, x.to(dev), b, beam, units) if beam else causal_search(model, x.to(dev), b, groups=units)
                losses.append(r.loss.cpu()), rts.append(r.route.cpu())
                tick(per_token * x[:, 1:].numel())
            out.loss[f"causal/{label}"] = torch.cat(losses) if losses else torch.empty(0, T - 1)
            out.route[f"causal/{label}"] = torch.cat(rts) if rts else torch.empty(0, T - 1, L, dtype=torch.uint8)
        phase_done(out, "causal")

    # 5. random best-of-N
    if n_random:
        for label, b in budgets.items():
            if random_labels is not None and label not in random_labels:
                continue

            def trial_routes(trial: int, i: int, x: Tensor, b=b, label=label) -> Tensor:
                key = zlib.crc32(f"{seed}/{label}/{trial}/{rank}/{i}".encode())
                return draw(b, units, len(x), T, torch.Generator().manual_seed(key)).to(dev)

            sums = torch.tensor(
                [float(run(lambda i, x, t=t: trial_routes(t, i, x)).double().sum()) for t in range(n_random)], dtype=torch.float64
            )
            sums = _sum_ranks(sums)
            n_tok = _sum_ranks(torch.tensor([float(N * (T - 1))], dtype=torch.float64))
            out.trials[label] = (sums / n_tok.clamp(min=1)).tolist()
            top = int(sums.argmin())
            out.loss[f"random/{label}"] = run(lambda i, x, t=top: trial_routes(t, i, x))
            parts = [trial_routes(top, i, x)[:, :-1].cpu() for i, x in enumerate(batches)]
            out.route[f"random/{label}"] = torch.cat(parts) if parts else torch.empty(0, T - 1, L, dtype=torch.uint8)
    return out


def _beam_shared(model, batches, uniq, per, beam, units, best, tick) -> dict[Budget, Tensor]:
    """The shared oracle by beam search, one beam per batch and budget: fills `best` (budget → per-batch losses and
    routes) and returns, per budget, the candidates for `fixed`, (M, L) in route order: for every group of positions
    sharing the budget, each batch's best route by its own totals among those its beam evaluated; the union over
    ranks."""
    dev = next(model.parameters()).device
    found: dict[Budget, set[bytes]] = {b: set() for b in uniq}
    groups_of = {b: [torch.tensor([t for t, p in enumerate(ps) if p == b]) for ps in per.values() if b in ps] for b in uniq}
    for x in batches:
        for b in uniq:
            r = shared_beam(model, x.to(dev), b, beam, units)
            best[b][0].append(r.loss.cpu()), best[b][1].append(r.route.cpu())
            for at in groups_of[b]:
                found[b].add(r.routes[r.route_pos_totals[:, at].sum(1).argmin()].cpu().numpy().tobytes())
        tick(x)
    if dist.is_available() and dist.is_initialized():  # the same candidates on every rank
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, found)
        found = {b: set().union(*(p[b] for p in parts)) for b in uniq}
    L = units.n_layer
    return {b: torch.tensor([list(r) for r in sorted(found[b])], dtype=torch.uint8).view(-1, L) for b in uniq}


def gather(res: SweepResult) -> SweepResult:
    """Concatenate every rank's per-token results on rank 0 (in rank order); a no-op on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return res
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, ({k: v for k, v in res.loss.items()}, {k: v for k, v in res.route.items()}))
    res.loss = {k: torch.cat([p[0][k] for p in parts]) for k in res.loss}
    res.route = {k: torch.cat([p[1][k] for p in parts]) for k in res.route}
    return res


def ppl(loss: Tensor) -> float:
    """exp(mean next-token loss), docs/design.md §2."""
    return math.exp(float(loss.double().mean()))

"""A whole oracle study over an evaluation set: every budget, both oracles, and the baselines, in batches.

`sweep` takes this rank's windows (N, T), runs, in order,
  1. all-big and all-small;
  2. one shared-route tree walk per batch for all budgets at once (their route sets' union);
  3. `fixed`: the route with the lowest summed loss over the whole set (totals summed over batches and
     ranks), then one forward with it per batch;
  4. the causal oracle, per budget and batch (if asked);
  5. random best-of-N: trial i draws every token's route from its own generator (seed, budget, trial,
     rank, batch), so the best trial, chosen on totals over all ranks, is drawn again and run once more
     instead of keeping N trials of routes;
and returns this rank's per-token results; `gather` brings them to rank 0.
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
from duollm.oracle.causal import causal_search
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


def walk_leaves(uniq: list[Budget], n_layer: int) -> int:
    """Distinct routes (leaves) of a walk over the union of these budgets' route sets."""
    return len(torch.unique(torch.cat([b.routes(n_layer) for b in uniq]), dim=0))


def work(
    budgets: dict[str, Budget | Schedule],
    n_layer: int,
    n_windows: int,
    n_pos: int,
    modes: tuple[str, ...],
    n_random: int,
    causal_labels: Collection[str] | None = None,
    random_labels: Collection[str] | None = None,
) -> dict[str, int]:
    """How much a sweep of `n_windows` × `n_pos` predicted tokens will do, in route·tokens, per phase."""
    n_tokens = n_windows * n_pos
    out = {"shared": walk_leaves(walk_budgets(budgets, n_pos), n_layer) * n_tokens}
    n_rand = sum(1 for label in budgets if random_labels is None or label in random_labels)
    out["baselines"] = (2 + len(budgets) + n_rand * (n_random + 1)) * n_tokens
    if "causal" in modes:
        causal = [b for label, b in budgets.items() if causal_labels is None or label in causal_labels]
        out["causal"] = sum(max(len(p.routes(n_layer)) for p in set(per_position(b, n_pos))) for b in causal) * n_tokens
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
) -> SweepResult:
    """Run the study on this rank's windows (N, T) int64; `tick(route·tokens)` reports progress.

    Random best-of-N runs for the budgets named in `random_labels` (None = all), and the causal oracle (mode
    "causal") for those named in `causal_labels` (None = all), on batches of
    `causal_batch` windows (0 = batch_size): it steps through positions one at a time, so it wants far more
    windows per step than a forward does before the GPU is busy."""
    model.eval()
    L = model.cfg.n_layer
    dev = next(model.parameters()).device
    N, T = windows.shape
    batches = [windows[i : i + batch_size] for i in range(0, N, batch_size)]
    out = SweepResult()

    def run(route_of: Callable[[int, Tensor], Tensor]) -> Tensor:  # one forward per batch → (N, T-1) on CPU
        parts = []
        for i, x in enumerate(batches):
            x = x.to(dev)
            parts.append(route_loss(model, x, route_of(i, x)).cpu())
            tick(x[:, 1:].numel())
        return torch.cat(parts) if parts else torch.empty(0, T - 1)

    out.loss["all-big"] = run(lambda i, x: torch.full((L,), Choice.BIG, dtype=torch.uint8))
    out.loss["all-small"] = run(lambda i, x: torch.full((L,), Choice.SMALL, dtype=torch.uint8))

    # 2. shared oracle: one walk per batch for the union of all budgets (a schedule contributes each of its budgets)
    per = {label: per_position(b, T - 1) for label, b in budgets.items()}
    uniq = walk_budgets(budgets, T - 1)
    leaves = walk_leaves(uniq, L)
    best = {b: ([], []) for b in uniq}  # budget → (losses, routes) per batch
    totals = {b: None for b in uniq}  # budget → (R, T-1) summed loss of each route
    routes = {b: b.routes(L) for b in uniq}
    for x in batches:
        res = search_many(model, x.to(dev), uniq)
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
        out.n_routes[label] = max(len(routes[b]) for b in set(ps))
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
            for x in (windows[i : i + cb] for i in range(0, N, cb)):
                r = causal_search(model, x.to(dev), b)
                losses.append(r.loss.cpu()), rts.append(r.route.cpu())
                tick(out.n_routes[label] * x[:, 1:].numel())
            out.loss[f"causal/{label}"] = torch.cat(losses) if losses else torch.empty(0, T - 1)
            out.route[f"causal/{label}"] = torch.cat(rts) if rts else torch.empty(0, T - 1, L, dtype=torch.uint8)
        phase_done(out, "causal")

    # 5. random best-of-N
    if n_random:
        for label, b in budgets.items():
            if random_labels is not None and label not in random_labels:
                continue

            def draw(trial: int, i: int, x: Tensor, b=b, label=label) -> Tensor:
                key = zlib.crc32(f"{seed}/{label}/{trial}/{rank}/{i}".encode())
                return draw_routes(b, L, len(x), T, torch.Generator().manual_seed(key)).to(dev)

            sums = torch.tensor([float(run(lambda i, x, t=t: draw(t, i, x)).double().sum()) for t in range(n_random)], dtype=torch.float64)
            sums = _sum_ranks(sums)
            n_tok = _sum_ranks(torch.tensor([float(N * (T - 1))], dtype=torch.float64))
            out.trials[label] = (sums / n_tok.clamp(min=1)).tolist()
            top = int(sums.argmin())
            out.loss[f"random/{label}"] = run(lambda i, x, t=top: draw(t, i, x))
            parts = [draw(top, i, x)[:, :-1].cpu() for i, x in enumerate(batches)]
            out.route[f"random/{label}"] = torch.cat(parts) if parts else torch.empty(0, T - 1, L, dtype=torch.uint8)
    return out


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

"""Route groups: g consecutive layers share one choice, so an L-layer route is a route over U = ceil(L / g) units.

    Groups.of(30, 3)         10 units of 3 layers
    Groups.of(12, 5)         units of 5, 5 and 2 layers: when g does not divide L the last group is shorter
    Groups.of(12, 1)         one unit per layer: no groups (0 means the same)

Budgets keep counting *layers*: under `Budget.exactly_big(6)` a grouped route still has exactly 6 BIG layers,
so a budget label means the same compute with or without groups. A count that no set of whole groups adds up to
(5 BIG layers in groups of 3) cannot be met; `Groups.check` says so in one line.

Everything here works on unit routes (choices per unit) through counts alone, without enumerating route sets, so
it serves models whose route sets are far too large to list (30 layers: C(30, 15) routes at half BIG):
`can_finish` (can a prefix still meet the budget), `count` (how many routes), `complete` (a greedy completion),
`sample` (uniform draws). `routes` enumerates, for the exhaustive searches, in `Budget.routes` order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from duollm.errors import DuoError
from duollm.routing.budget import Budget
from duollm.routing.route import N_CHOICES

ENUMERATE_MAX = 2**22  # routes over the options (K^U) that `routes` may list before it refuses


@functools.lru_cache(maxsize=1 << 20)
def _ways(sizes: tuple[int, ...], need: tuple[int | None, ...]) -> int:
    """Assignments of units of `sizes` layers to the options (one `need` entry per option: the layers it must still
    take, None = not counted) that meet every counted need exactly."""
    counted = [n for n in need if n is not None]
    room = sum(sizes)
    if sum(counted) > room or (len(counted) == len(need) and sum(counted) != room):
        return 0
    if not sizes:
        return 1
    s, rest = sizes[0], sizes[1:]
    total = 0
    for i, n in enumerate(need):
        if n is None:
            total += _ways(rest, need)
        elif n >= s:
            total += _ways(rest, need[:i] + (n - s,) + need[i + 1 :])
    return total


@dataclass(frozen=True)
class Groups:
    """The units of a grouped route: `sizes[u]` consecutive layers share unit u's choice."""

    sizes: tuple[int, ...]  # layers per unit, first unit first; they add up to n_layer

    @staticmethod
    def of(n_layer: int, g: int = 1) -> Groups:
        """Units of g layers (the last one shorter when g does not divide n_layer); g = 0 or 1: one per layer."""
        if g < 0 or g > n_layer:
            raise DuoError(f"--groups must be in 0..{n_layer} (the model's layers), got {g}")
        g = max(g, 1)
        return Groups((g,) * (n_layer // g) + ((n_layer % g,) if n_layer % g else ()))

    @property
    def n_layer(self) -> int:
        return sum(self.sizes)

    @property
    def n_units(self) -> int:
        return len(self.sizes)

    @property
    def trivial(self) -> bool:
        """One unit per layer (no groups)."""
        return all(s == 1 for s in self.sizes)

    @property
    def starts(self) -> list[int]:
        """The first layer of each unit."""
        return [sum(self.sizes[:u]) for u in range(self.n_units)]

    def __str__(self) -> str:
        return "+".join(str(s) for s in self.sizes)

    def expand(self, units: Tensor, first: int = 0) -> Tensor:
        """Unit routes (..., U) → layer routes (..., L): each unit's choice repeated over its layers. With `first`,
        the units are the last ones from unit `first` on, and so are the layers."""
        sizes = torch.tensor(self.sizes[first : first + units.shape[-1]], device=units.device)
        return units.repeat_interleave(sizes, dim=-1)

    def need(self, budget: Budget, counts) -> tuple[int | None, ...]:
        """Per option of `budget` (ascending): the layers it must still take given the choices used so far,
        `counts` (3,) layers per Choice; None for an uncounted option."""
        t = budget.targets()
        return tuple(t[c] - int(counts[c]) if c in t else None for c in budget.options)

    def can_finish(self, budget: Budget, counts, unit: int) -> bool:
        """Can a prefix of `unit` units with layer counts `counts` (3,) be completed within `budget`?"""
        if self.trivial:
            return budget.feasible(counts, self.n_layer - unit)  # the ungrouped walk's own test
        need = self.need(budget, counts)
        return all(n is None or n >= 0 for n in need) and _ways(self.sizes[unit:], need) > 0

    def count(self, budget: Budget) -> int:
        """How many grouped routes meet `budget` (counted, not listed)."""
        budget.check(self.n_layer)
        return _ways(self.sizes, self.need(budget, [0] * N_CHOICES))

    def check(self, budget: Budget, label: str = "") -> None:
        """DuoError (one line) if no grouped route meets `budget`."""
        try:
            budget.check(self.n_layer)
        except ValueError:
            raise DuoError(f"budget {label or budget} cannot be met by a {self.n_layer}-layer model") from None
        if self.count(budget) == 0:
            sums = {0}
            for s in self.sizes:
                sums |= {x + s for x in sums}
            raise DuoError(
                f"budget {label or budget} cannot be met with groups of {self} layers (whole groups add up to {', '.join(map(str, sorted(sums)))})"
            )

    def routes(self, budget: Budget) -> Tensor:
        """The grouped route set, (R, L) uint8 layer routes, lexicographic (the ungrouped order restricted)."""
        if self.trivial:
            return budget.routes(self.n_layer)
        budget.check(self.n_layer)
        K, U = len(budget.options), self.n_units
        if K**U > ENUMERATE_MAX:
            raise DuoError(f"{K}^{U} unit routes are too many to list; use a beam search (--beam)")
        opts = torch.tensor(budget.options, dtype=torch.uint8)
        idx = torch.arange(K**U)
        units = opts[torch.stack([(idx // K ** (U - 1 - u)) % K for u in range(U)], dim=1)]  # (K^U, U)
        routes = self.expand(units)  # (K^U, L)
        keep = torch.ones(len(routes), dtype=torch.bool)
        for c, n in budget.targets().items():
            keep &= (routes == c).sum(1) == n
        return routes[keep]

    def complete(self, budget: Budget, counts, unit: int, prefer: tuple[int, ...]) -> tuple[int, ...]:
        """The greedy completion of a prefix of `unit` units with layer counts `counts`: at each later unit the first
        choice of `prefer` (an order over Choice values) that keeps the route completable. Consistent: if the
        completion of a prefix p starts with c, the completion of p + c is the rest of it."""
        counts, out = list(int(c) for c in counts), []
        order = [c for c in prefer if c in budget.options]
        for u in range(unit, self.n_units):
            for c in order:
                counts[c] += self.sizes[u]
                if self.can_finish(budget, counts, u + 1):
                    out.append(c)
                    break
                counts[c] -= self.sizes[u]
            else:
                raise ValueError(f"no completion of a prefix of {unit} units meets {budget}")
        return tuple(out)

    def sample(self, budget: Budget, n: int, gen: torch.Generator) -> Tensor:
        """n routes drawn uniformly from the grouped route set, without listing it: (n, L) uint8. Unit by unit, each
        choice is drawn with probability proportional to the number of routes that complete it."""
        budget.check(self.n_layer)
        opts = list(budget.options)
        units = torch.empty(n, self.n_units, dtype=torch.uint8)
        state = [self.need(budget, [0] * N_CHOICES)] * n  # per draw: what each option must still take
        for u in range(self.n_units):
            rest, s = self.sizes[u + 1 :], self.sizes[u]
            weights = {}  # need → (K,) completions after each option
            for nd in set(state):
                after = [_step(nd, i, s) for i in range(len(nd))]
                weights[nd] = [_ways(rest, a) if all(x is None or x >= 0 for x in a) else 0 for a in after]
            w = torch.tensor([weights[nd] for nd in state], dtype=torch.float64)  # (n, K)
            pick = torch.multinomial(w, 1, generator=gen).squeeze(1)  # (n,)
            units[:, u] = torch.tensor(opts, dtype=torch.uint8)[pick]
            state = [_step(nd, i, s) for nd, i in zip(state, pick.tolist(), strict=True)]
        return self.expand(units)


def _step(need: tuple[int | None, ...], i: int, s: int) -> tuple[int | None, ...]:
    """The needs after option i takes a unit of s layers."""
    return need[:i] + ((None if need[i] is None else need[i] - s),) + need[i + 1 :]


def reachable(groups: Groups, make, n_layer: int) -> list[int]:
    """The counts k in 0..n_layer whose budget `make(k)` (e.g. Budget.exactly_big) grouped routes can meet."""
    return [k for k in range(n_layer + 1) if groups.count(make(k)) > 0]


def nodes(groups: Groups, budget: Budget) -> list[int]:
    """Prefixes of each length 0..U that can still meet `budget`: the route tree's width at every depth."""
    level = {groups.need(budget, [0] * N_CHOICES): 1}  # need → prefixes that reach it
    out = [1]
    for u, s in enumerate(groups.sizes):
        nxt: dict[tuple[int | None, ...], int] = {}
        for need, n in level.items():
            for i in range(len(need)):
                after = _step(need, i, s)
                if all(x is None or x >= 0 for x in after) and _ways(groups.sizes[u + 1 :], after):
                    nxt[after] = nxt.get(after, 0) + n
        level = nxt
        out.append(sum(level.values()))
    return out


def beam_work(groups: Groups, budget: Budget, width: int) -> int:
    """Routes a beam of `width` scores per token: at each depth the children of the prefixes it keeps (at most
    `width` × options, and no more than the tree has). A width that covers the tree gives the tree's size."""
    n = nodes(groups, budget)
    K = len(budget.options)
    return sum(min(n[u + 1], min(width, n[u]) * K) for u in range(groups.n_units))

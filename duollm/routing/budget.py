"""Budgets: constraints on routes (docs/design.md §1, §2; the paper's budgets: arXiv:2410.10846 §2, §3.2.1).

A budget fixes which choices a route may use (its *options*) and, optionally, exactly how many layers take
each constrained choice. Budgets are *exact* (exactly k BIG layers, not at most k): the paper's U-shaped
oracle curve only arises that way.

    Budget.exactly_big(k)                  options small/big, exactly k BIG layers
    Budget.exactly_skip(s)                 options skip/big, exactly s SKIP layers
    Budget.counts(big=b, small=m, skip=s)  all three choices, exact counts (b + m + s == n_layer)
    Budget.free(options)                   any route over the options (e.g. the unconstrained 2^L oracle)

`budget.routes(n_layer)` enumerates the route set as an `(R, L)` uint8 tensor in lexicographic order over
the choice values (first layer most significant, SKIP < SMALL < BIG). The oracle's depth-first walk visits
routes in this same order, and both break ties by taking the first route in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from duollm.routing.route import Choice


@dataclass(frozen=True)
class Budget:
    """Allowed choices, and exact counts per choice (`None` = that choice is not counted)."""

    options: tuple[int, ...]  # Choice values, ascending
    big: int | None = None
    small: int | None = None
    skip: int | None = None

    @staticmethod
    def exactly_big(k: int) -> Budget:
        return Budget(options=(Choice.SMALL, Choice.BIG), big=k)

    @staticmethod
    def exactly_skip(s: int) -> Budget:
        return Budget(options=(Choice.SKIP, Choice.BIG), skip=s)

    @staticmethod
    def counts(big: int, small: int, skip: int) -> Budget:
        return Budget(options=(Choice.SKIP, Choice.SMALL, Choice.BIG), big=big, small=small, skip=skip)

    @staticmethod
    def free(options: tuple[int, ...] = (Choice.SMALL, Choice.BIG)) -> Budget:
        return Budget(options=tuple(sorted(int(c) for c in options)))

    def targets(self) -> dict[int, int]:
        """Constrained choice → exact count."""
        t = {Choice.BIG: self.big, Choice.SMALL: self.small, Choice.SKIP: self.skip}
        return {int(c): n for c, n in t.items() if n is not None}

    def check(self, n_layer: int) -> None:
        """Raise ValueError if no route of `n_layer` layers can meet this budget."""
        t = self.targets()
        if any(n < 0 for n in t.values()) or sum(t.values()) > n_layer:
            raise ValueError(f"budget {self} cannot be met with {n_layer} layers")
        if set(t) - set(self.options):
            raise ValueError(f"budget {self} counts a choice that is not among its options")
        if len(t) == len(self.options) and sum(t.values()) != n_layer:
            raise ValueError(f"budget counts must add up to {n_layer} layers, got {sum(t.values())}")

    def feasible(self, counts: Tensor, remaining: int) -> bool:
        """Can a prefix with choice counts `counts` (3,) be completed with `remaining` more layers?"""
        t = self.targets()
        need = 0  # layers that must still take a constrained choice
        for c, n in t.items():
            used = int(counts[c])
            if used > n:
                return False
            need += n - used
        free_options = [c for c in self.options if c not in t]
        return need <= remaining and (need == remaining or bool(free_options))

    def contains(self, counts: Tensor) -> bool:
        """Does a complete route with choice counts `counts` (3,) meet the budget?"""
        return all(int(counts[c]) == n for c, n in self.targets().items())

    def routes(self, n_layer: int) -> Tensor:
        """The whole route set, (R, L) uint8, lexicographic over choice values."""
        self.check(n_layer)
        opts = torch.tensor(self.options, dtype=torch.uint8)  # (K,)
        K = len(self.options)
        idx = torch.arange(K**n_layer)  # (K^L,) every route over the options
        digits = torch.stack([(idx // K ** (n_layer - 1 - l)) % K for l in range(n_layer)], dim=1)  # (K^L, L)
        routes = opts[digits]  # (K^L, L)
        keep = torch.ones(len(routes), dtype=torch.bool)
        for c, n in self.targets().items():
            keep &= (routes == c).sum(1) == n
        return routes[keep]  # (R, L)


@dataclass(frozen=True)
class Schedule:
    """A budget that changes along the sequence: the count moves linearly from `start` to `end`.

    `kind="big"` schedules exactly-k-BIG budgets (options big/small), `kind="skip"` exactly-s-SKIP ones
    (options big/skip). Position t of n predicted positions gets round(start + (end - start) · t / (n - 1)),
    so `Schedule("big", 6, 2)` averages 4 BIG layers per token over a sequence, like the constant budget 4
    (the paper's Fig. 4c; claim 5 of docs/design.md, "The method").
    """

    kind: str  # "big" or "skip": which count the schedule moves
    start: int  # count at the first predicted position
    end: int  # count at the last predicted position

    def __post_init__(self):
        if self.kind not in ("big", "skip"):
            raise ValueError(f"schedule kind must be 'big' or 'skip', got {self.kind!r}")

    def counts(self, n: int) -> list[int]:
        """The count at each of `n` predicted positions."""
        if n == 1:
            return [self.start]
        return [round(self.start + (self.end - self.start) * t / (n - 1)) for t in range(n)]

    def budgets(self, n: int) -> list[Budget]:
        """One Budget per predicted position."""
        make = Budget.exactly_big if self.kind == "big" else Budget.exactly_skip
        return [make(k) for k in self.counts(n)]

    def check(self, n_layer: int) -> None:
        for k in (self.start, self.end):
            (Budget.exactly_big if self.kind == "big" else Budget.exactly_skip)(k).check(n_layer)

    def __str__(self) -> str:
        return f"{self.start}>{self.end}"


def per_position(budget: Budget | Schedule, n: int) -> list[Budget]:
    """The budget of each of `n` predicted positions: the same Budget everywhere, or a Schedule's."""
    return budget.budgets(n) if isinstance(budget, Schedule) else [budget] * n


OPTIONS = {  # the `--options` flag of the oracle and router commands → the choices a route may use
    "big,small": (Choice.SMALL, Choice.BIG),
    "big,skip": (Choice.SKIP, Choice.BIG),
    "big,small,skip": (Choice.SKIP, Choice.SMALL, Choice.BIG),
}


def parse_options(flag: str) -> tuple[int, ...]:
    """`big,small` → (SMALL, BIG); ValueError naming the flags there are."""
    if flag not in OPTIONS:
        raise ValueError(f"--options must be one of {', '.join(OPTIONS)}, got {flag!r}")
    return OPTIONS[flag]


def parse_mix(text: str, options: str = "big,small") -> dict[int, float]:
    """The share of each choice, from a budget or a random policy: `0.5` → {BIG: 0.5, SMALL: 0.5} under big,small
    ({SKIP: 0.5, BIG: 0.5} under big,skip), `B,M,S` → {BIG: B, SMALL: M, SKIP: S} under big,small,skip. ValueError
    naming the problem unless every share is a finite number in [0, 1] and they sum to 1."""
    parse_options(options)
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError("expected a fraction such as 0.5 (or three, B,M,S, for big,small,skip)") from None
    want = 3 if options == "big,small,skip" else 1
    if len(vals) != want:
        raise ValueError(f"{options} takes {'three fractions B,M,S' if want == 3 else 'one fraction'}, got {len(vals)}")
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in vals) or (want == 3 and abs(sum(vals) - 1) > 1e-6):
        raise ValueError("fractions (probabilities) must lie in [0, 1]" + (" and sum to 1" if want == 3 else ""))
    if want == 3:
        return {int(Choice.BIG): vals[0], int(Choice.SMALL): vals[1], int(Choice.SKIP): vals[2]}
    counted, other = (Choice.BIG, Choice.SMALL) if options == "big,small" else (Choice.SKIP, Choice.BIG)
    return {int(counted): vals[0], int(other): 1 - vals[0]}

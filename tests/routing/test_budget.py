"""Budgets and their route sets. Run: pytest tests/routing/test_budget.py"""

from math import comb, factorial

import pytest
import torch

from duollm import Choice
from duollm.routing.budget import Budget


@pytest.mark.parametrize("k", range(0, 7))
def test_exactly_big_sizes(k):
    r = Budget.exactly_big(k).routes(6)
    assert r.shape == (comb(6, k), 6) and r.dtype == torch.uint8
    assert bool(((r == Choice.BIG).sum(1) == k).all()) and bool(((r == Choice.SMALL) | (r == Choice.BIG)).all())
    assert len({tuple(x) for x in r.tolist()}) == len(r)


def test_skip_and_three_way_sizes():
    assert len(Budget.exactly_skip(2).routes(5)) == comb(5, 2)
    assert len(Budget.counts(big=2, small=2, skip=1).routes(5)) == factorial(5) // (2 * 2 * 1)
    assert len(Budget.free().routes(4)) == 16
    assert len(Budget.free((0, 1, 2)).routes(3)) == 27


def test_routes_are_lexicographic():
    r = Budget.exactly_big(1).routes(3).tolist()
    assert r == [[1, 1, 2], [1, 2, 1], [2, 1, 1]]


def test_feasible_prunes_prefixes():
    b = Budget.exactly_big(2)
    assert b.feasible(torch.tensor([0, 0, 1]), remaining=2)
    assert not b.feasible(torch.tensor([0, 0, 3]), remaining=2)  # too many BIG already
    assert not b.feasible(torch.tensor([0, 3, 0]), remaining=1)  # cannot reach 2 BIG
    c = Budget.counts(big=1, small=1, skip=1)
    assert not c.feasible(torch.tensor([0, 1, 0]), remaining=1)  # needs 2 more constrained layers


@pytest.mark.parametrize("b", [Budget.exactly_big(5), Budget.counts(big=1, small=1, skip=1), Budget.exactly_big(-1)])
def test_impossible_budgets(b):
    with pytest.raises(ValueError):
        b.routes(4)


def test_schedule_counts_and_budgets():
    from duollm.routing.budget import Schedule, per_position

    s = Schedule("big", 6, 2)
    c = s.counts(9)
    assert c[0] == 6 and c[-1] == 2 and c == sorted(c, reverse=True) and sum(c) / len(c) == 4
    assert [b.big for b in s.budgets(9)] == c
    assert str(s) == "6>2" and per_position(Budget.exactly_big(3), 4) == [Budget.exactly_big(3)] * 4
    assert Schedule("skip", 1, 3).budgets(2) == [Budget.exactly_skip(1), Budget.exactly_skip(3)]
    with pytest.raises(ValueError, match="kind"):
        Schedule("small", 1, 2)
    with pytest.raises(ValueError, match="cannot be met"):
        Schedule("big", 13, 2).check(12)

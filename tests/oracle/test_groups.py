"""Route groups: units of consecutive layers, their route sets counted and listed, completions and draws.
Run: pytest tests/oracle/test_groups.py"""

import pytest
import torch

from duollm import Choice
from duollm.errors import DuoError
from duollm.oracle.groups import Groups, beam_work, nodes, reachable
from duollm.routing.budget import Budget

BUDGETS = [Budget.exactly_big(4), Budget.exactly_big(7), Budget.exactly_skip(2), Budget.counts(big=5, small=5, skip=2), Budget.free()]


def test_sizes():
    assert Groups.of(30, 3).sizes == (3,) * 10
    assert Groups.of(12, 5).sizes == (5, 5, 2)  # the last group is shorter
    assert Groups.of(12, 0) == Groups.of(12, 1) == Groups((1,) * 12) and Groups.of(12, 1).trivial
    assert Groups.of(12, 12).sizes == (12,)
    for g in (-1, 13):
        with pytest.raises(DuoError, match="--groups must be in 0..12"):
            Groups.of(12, g)


@pytest.mark.parametrize("g", [1, 2, 5])
@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_routes_are_the_ungrouped_set_restricted(g, budget):
    """The grouped set: the routes of the budget whose choices are equal within every group, in the same order;
    `count` gives its size without listing it."""
    groups = Groups.of(12, g)
    if groups.count(budget) == 0:
        with pytest.raises(DuoError, match="cannot be met with groups of"):
            groups.check(budget)
        return
    every = budget.routes(12)
    starts = torch.tensor(groups.starts).repeat_interleave(torch.tensor(groups.sizes))  # (L,) first layer of each layer's group
    grouped = every[(every == every[:, starts]).all(1)]
    assert torch.equal(groups.routes(budget), grouped)
    assert groups.count(budget) == len(grouped)
    assert nodes(groups, budget)[-1] == len(grouped)


def test_can_finish_matches_the_route_set():
    """A prefix can be finished exactly when some route of the set starts with it (groups of 5, 5, 2)."""
    groups, budget = Groups.of(12, 5), Budget.exactly_big(7)
    routes = groups.routes(budget)  # 5+2: BBBBB SSSSS BB, SSSSS BBBBB BB
    assert len(routes) == 2
    for first in (Choice.SMALL, Choice.BIG):
        for second in (Choice.SMALL, Choice.BIG):
            counts = [0, 0, 0]
            counts[first] += 5
            counts[second] += 5
            prefix = torch.tensor([first] * 5 + [second] * 5, dtype=torch.uint8)
            assert groups.can_finish(budget, counts, 2) == bool((routes[:, :10] == prefix).all(1).any())


def test_unmet_counts_are_one_line_and_reachable_counts_listed():
    groups = Groups.of(12, 3)
    assert reachable(groups, Budget.exactly_big, 12) == [0, 3, 6, 9, 12]
    with pytest.raises(
        DuoError, match=r"budget 5 BIG cannot be met with groups of 3\+3\+3\+3 layers \(whole groups add up to 0, 3, 6, 9, 12\)"
    ):
        groups.check(Budget.exactly_big(5), "5 BIG")
    assert reachable(Groups.of(12, 5), Budget.exactly_big, 12) == [0, 2, 5, 7, 10, 12]


@pytest.mark.parametrize("prefer", [(Choice.BIG, Choice.SMALL, Choice.SKIP), (Choice.SKIP, Choice.SMALL, Choice.BIG)])
def test_completion_is_in_the_budget_and_consistent(prefer):
    groups, budget = Groups.of(12, 2), Budget.counts(big=4, small=6, skip=2)
    for unit_route in groups.routes(budget)[::7]:
        units = unit_route[torch.tensor(groups.starts)].tolist()
        for u in range(groups.n_units):
            counts = [0, 0, 0]
            for c in units[:u]:
                counts[c] += 2
            comp = groups.complete(budget, counts, u, prefer)
            full = groups.expand(torch.tensor(units[:u] + list(comp), dtype=torch.uint8))
            assert budget.contains(torch.bincount(full.long(), minlength=3))
            counts[comp[0]] += 2  # the child that follows the completion completes with the rest of it
            assert groups.complete(budget, counts, u + 1, prefer) == comp[1:]


def test_big_first_completion_of_the_root():
    groups = Groups.of(12, 3)
    assert groups.complete(Budget.exactly_big(6), [0, 0, 0], 0, (Choice.BIG, Choice.SMALL)) == (2, 2, 1, 1)
    assert groups.complete(Budget.exactly_big(6), [0, 0, 0], 0, (Choice.SMALL, Choice.BIG)) == (1, 1, 2, 2)


def test_draws_are_uniform_over_the_grouped_set():
    groups, budget = Groups.of(12, 3), Budget.exactly_big(6)  # C(4, 2) = 6 routes
    draws = groups.sample(budget, 6000, torch.Generator().manual_seed(0))
    routes = groups.routes(budget)
    hits = (draws[:, None] == routes[None]).all(-1)  # (n, R)
    assert bool((hits.sum(1) == 1).all())  # every draw is in the set
    share = hits.float().mean(0)
    assert bool(((share - 1 / 6).abs() < 0.03).all()), share
    big = Groups.of(30).sample(Budget.exactly_big(15), 4, torch.Generator().manual_seed(0))  # C(30, 15) routes: not listed
    assert big.shape == (4, 30) and bool(((big == Choice.BIG).sum(1) == 15).all())


def test_beam_work():
    groups, budget = Groups.of(12), Budget.exactly_big(6)
    tree = nodes(groups, budget)
    assert tree[:3] == [1, 2, 4] and tree[-1] == 924
    assert beam_work(groups, budget, 10**6) == sum(tree[1:])  # a width that covers the tree scores all of it
    assert beam_work(groups, budget, 1) == 2 * 12  # two children per depth
    assert beam_work(groups, Budget.exactly_big(0), 8) == 12  # one route: one child per depth

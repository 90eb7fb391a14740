"""Beam search over the route tree, and route groups in the exhaustive searches: a beam that covers every route is
the exhaustive search, a narrow one never beats it, groups of one layer change nothing, and every route keeps its
budget. Run: pytest tests/oracle/test_beam.py"""

import pytest
import torch

from duollm import Choice, DuoConfig, DuoLM
from duollm.oracle import beam_search, search
from duollm.oracle.beam import COMPLETIONS, PREFER, causal_beam, shared_beam
from duollm.oracle.groups import Groups
from duollm.oracle.search import route_loss
from duollm.routing.budget import Budget, Schedule

BUDGETS = [Budget.exactly_big(3), Budget.exactly_skip(2), Budget.counts(big=2, small=2, skip=2), Budget.free()]


@pytest.fixture(scope="module")
def six():
    """A 6-layer random Duo model, three sequences of 12 tokens: a route tree deep enough for a narrow beam to miss."""
    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=6, n_head=2, n_kv_head=2, d_model=16, d_big=64, d_small=4, vocab_size=32, max_seq_len=16)).eval()
    ids = torch.randint(0, 32, (3, 12), generator=torch.Generator().manual_seed(3))
    return m, ids


@pytest.mark.parametrize("g", [1, 2, 4])
@pytest.mark.parametrize("budget", BUDGETS, ids=str)
def test_a_beam_that_covers_every_route_is_the_exhaustive_search(six, budget, g):
    """Bit for bit in the losses, the same routes (ties to the first route), the same fixed route."""
    m, ids = six
    if Groups.of(6, g).count(budget) == 0:
        pytest.skip("no route of whole groups meets this budget")
    ex = search(m, ids, budget, groups=g)
    res = search(m, ids, budget, beam=ex.n_routes, groups=g)
    assert torch.equal(res.loss, ex.loss) and torch.equal(res.route, ex.route)
    assert res.n_routes == ex.n_routes and torch.equal(res.fixed_route, ex.fixed_route)


@pytest.mark.parametrize("budget", [Budget.exactly_big(3), Budget.counts(big=2, small=2, skip=2)], ids=str)
def test_a_narrow_beam_never_beats_the_exhaustive_search(six, budget):
    """A restriction of the search: token by token, its loss is one of the route set's losses, so never lower."""
    m, ids = six
    for x in (ids, ids[:1, :2]):  # the whole batch; one token, whose beam no other token widens
        ex = search(m, x, budget)
        gaps = []
        for width in (1, 2, 3):
            res = search(m, x, budget, beam=width)
            assert bool((res.loss >= ex.loss).all())
            gaps.append(float((res.loss - ex.loss).mean()))
    assert gaps[0] > 0  # one token's width-1 beam misses its best route on this model
    assert gaps[-1] <= gaps[0]


def test_the_beam_ends_at_or_below_every_completion_of_the_root(six):
    """Greedy completions are consistent, so a token's best score never rises: the beam's loss is at most the loss of
    each completion of the empty prefix, a route of the budget run whole."""
    m, ids = six
    budget, groups = Budget.exactly_big(3), Groups.of(6)
    res = shared_beam(m, ids, budget, 1)
    for name in COMPLETIONS:
        comp = torch.tensor(groups.complete(budget, [0, 0, 0], 0, PREFER[name]), dtype=torch.uint8)
        assert bool((res.loss <= route_loss(m, ids, comp)).all())


@pytest.mark.parametrize("width", [1, 2, 20])
def test_beam_routes_keep_the_budget_and_the_groups(six, width):
    m, ids = six
    for g, budget in ((1, Budget.exactly_big(3)), (2, Budget.exactly_big(4)), (4, Budget.counts(big=4, small=0, skip=2))):
        res = search(m, ids, budget, beam=width, groups=g)
        assert res.route.shape == (3, 11, 6)
        for c, n in budget.targets().items():
            assert bool(((res.route == c).sum(-1) == n).all())
        units = Groups.of(6, g)
        first = res.route[..., units.starts].repeat_interleave(torch.tensor(units.sizes), dim=-1)
        assert torch.equal(res.route, first)  # equal choices within each group
        # its losses are those of its routes, run as a policy
        full = torch.cat([res.route, res.route[:, -1:]], 1)
        loss = torch.stack([route_loss(m, ids[i : i + 1], full[i, t]) for i in range(3) for t in range(11)])
        assert torch.allclose(loss.view(3, 11, 11).diagonal(dim1=1, dim2=2), res.loss, atol=1e-6)


def test_groups_of_one_layer_change_nothing(six):
    m, ids = six
    for budget in BUDGETS:
        plain = search(m, ids, budget)
        for g in (0, 1):
            res = search(m, ids, budget, groups=g)
            assert torch.equal(res.loss, plain.loss) and torch.equal(res.route, plain.route) and res.n_routes == plain.n_routes
        assert torch.equal(search(m, ids, budget, beam=2, groups=1).loss, search(m, ids, budget, beam=2).loss)
    c = search(m, ids, Budget.exactly_big(3), mode="causal")
    assert torch.equal(search(m, ids, Budget.exactly_big(3), mode="causal", groups=1).loss, c.loss)


def test_grouped_exhaustive_search_is_brute_force_over_the_grouped_set(six):
    m, ids = six
    budget, groups = Budget.exactly_big(4), Groups.of(6, 2)  # units of 2 layers: 3 routes
    res = search(m, ids, budget, groups=2)
    routes = groups.routes(budget)
    losses = torch.stack([route_loss(m, ids, r) for r in routes])  # (R, B, T-1)
    assert res.n_routes == 3 and torch.equal(res.loss, losses.min(0).values)
    assert torch.equal(res.route, routes[losses.argmin(0)])
    causal = search(m, ids, budget, mode="causal", groups=2)
    assert bool(((causal.route == Choice.BIG).sum(-1) == 4).all())
    assert torch.allclose(causal.loss[:, 0], res.loss[:, 0], atol=1e-5)  # the first token has no past


@pytest.mark.parametrize("budget", [Budget.exactly_big(3), Budget.counts(big=2, small=2, skip=2), Schedule("big", 5, 1)], ids=str)
def test_causal_beam_that_covers_every_route_is_the_causal_oracle(six, budget):
    """To rounding: the winners' keys and values are recomputed for the cache."""
    m, ids = six
    ex = search(m, ids, budget, mode="causal")
    res = search(m, ids, budget, mode="causal", beam=10**3)
    assert torch.allclose(res.loss, ex.loss, atol=1e-5) and torch.equal(res.route, ex.route)


def test_causal_beam_keeps_the_budget_and_loses_nothing_at_the_first_token(six):
    m, ids = six
    budget = Budget.exactly_big(3)
    ex = search(m, ids, budget, mode="causal")
    for g in (1, 3):
        res = causal_beam(m, ids, budget, 1, Groups.of(6, g))
        assert bool(((res.route == Choice.BIG).sum(-1) == 3).all())
        first = res.route[..., Groups.of(6, g).starts].repeat_interleave(torch.tensor(Groups.of(6, g).sizes), dim=-1)
        assert torch.equal(res.route, first)
    narrow = causal_beam(m, ids, budget, 1)
    assert bool((narrow.loss[:, 0] >= ex.loss[:, 0] - 1e-6).all())  # no past yet: a restriction of the same search


def test_schedule_by_beam(six):
    m, ids = six
    s = Schedule("big", 5, 1)
    ex, res = search(m, ids, s), search(m, ids, s, beam=100)
    assert torch.equal(res.loss, ex.loss) and torch.equal(res.route, ex.route) and torch.equal(res.fixed_route, ex.fixed_route)
    narrow = search(m, ids, s, beam=1)
    assert (narrow.route == Choice.BIG).sum(-1)[0].tolist() == s.counts(11)
    assert bool((narrow.loss >= ex.loss).all())


def test_beam_search_entry_point(six):
    m, ids = six
    b = Budget.exactly_big(3)
    assert torch.equal(beam_search(m, ids, b, 2).loss, search(m, ids, b, beam=2).loss)
    assert torch.equal(beam_search(m, ids, b, 2, mode="causal", groups=1).loss, search(m, ids, b, mode="causal", beam=2).loss)


def test_bad_input(six):
    m, ids = six
    with pytest.raises(ValueError, match="beam width must be >= 0"):
        search(m, ids, Budget.exactly_big(3), beam=-1)
    with pytest.raises(ValueError, match="beam width must be >= 1"):
        shared_beam(m, ids, Budget.exactly_big(3), 0)
    with pytest.raises(ValueError, match="beam completions must be among"):
        shared_beam(m, ids, Budget.exactly_big(3), 2, completions=("best",))
    with pytest.raises(ValueError, match="cannot be met with groups of 2"):
        search(m, ids, Budget.exactly_big(3), beam=2, groups=2)
    with pytest.raises(ValueError, match="cannot be met with groups of 2"):
        search(m, ids, Budget.exactly_big(3), groups=2)
    with pytest.raises(ValueError, match="--groups must be in 0..6"):
        search(m, ids, Budget.exactly_big(3), groups=7)

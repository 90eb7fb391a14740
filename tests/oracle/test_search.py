"""The shared-route oracle equals brute force (one forward per route). Run: pytest tests/oracle/test_search.py"""

from math import comb

import pytest
import torch

from duollm import Choice, DuoConfig, DuoLM
from duollm.oracle import brute_force, search, search_many
from duollm.oracle.loss import token_loss
from duollm.routing.budget import Budget


@pytest.mark.parametrize(
    "budget",
    [Budget.exactly_big(2), Budget.exactly_big(1), Budget.exactly_skip(2), Budget.counts(big=2, small=1, skip=1), Budget.free()],
)
def test_equals_brute_force(deep, budget):
    m, ids = deep
    res = search(m, ids, budget)
    losses, routes, arg = brute_force(m, ids, budget)
    assert res.n_routes == len(routes)
    assert torch.allclose(res.loss, losses.min(0).values, atol=1e-6)
    assert torch.equal(res.route, routes[arg])  # same argmin, ties to the first route
    means = losses.mean((1, 2))
    assert torch.equal(res.fixed_route, routes[means.argmin()])
    assert torch.allclose(res.fixed_loss, losses[means.argmin()], atol=1e-6)


def test_ends_of_the_sweep_and_ordering(deep):
    m, ids = deep
    L = 4
    results = search_many(m, ids, [Budget.exactly_big(k) for k in range(L + 1)])
    small = brute_force(m, ids, Budget.exactly_big(0))[0][0]
    big = brute_force(m, ids, Budget.exactly_big(L))[0][0]
    assert torch.allclose(results[0].loss, small, atol=1e-6) and bool((results[0].route == Choice.SMALL).all())
    assert torch.allclose(results[L].loss, big, atol=1e-6) and bool((results[L].route == Choice.BIG).all())
    for r in results:
        assert bool((r.loss <= r.fixed_loss + 1e-6).all())  # the oracle never does worse than fixed
    # one walk for all k equals one walk per k
    for k in (1, 2):
        assert torch.equal(results[k].route, search(m, ids, Budget.exactly_big(k)).route)


def test_unknown_mode_is_refused(deep):
    m, ids = deep
    with pytest.raises(ValueError, match="'shared' or 'causal'"):
        search(m, ids, Budget.exactly_big(1), mode="greedy")


def test_route_totals_give_fixed_across_chunks(deep):
    m, ids = deep
    b = Budget.exactly_big(2)
    whole = search(m, ids, b)
    parts = [search(m, ids[i : i + 1], b) for i in range(2)]
    assert torch.equal(whole.routes, b.routes(4)) and torch.equal(parts[0].routes, whole.routes)
    totals = parts[0].route_totals + parts[1].route_totals
    assert torch.allclose(totals, whole.route_totals)
    assert torch.equal(whole.routes[totals.argmin()], whole.fixed_route)


def test_random_best_of_n(deep):
    m, ids = deep
    from duollm.oracle import random_best_of_n

    b = Budget.exactly_big(2)
    r1 = random_best_of_n(m, ids, b, 5, torch.Generator().manual_seed(0))
    r2 = random_best_of_n(m, ids, b, 5, torch.Generator().manual_seed(0))
    assert torch.equal(r1.loss, r2.loss) and r1.trial_means.shape == (5,)
    assert float(r1.loss.double().mean()) == pytest.approx(float(r1.trial_means.min()))
    assert bool(((r1.route == Choice.BIG).sum(-1) == 2).all())  # every token inside the budget
    # a budget with a single route: random = that route = all-big
    only = random_best_of_n(m, ids, Budget.exactly_big(4), 2, torch.Generator())
    assert torch.allclose(only.loss, search(m, ids, Budget.exactly_big(4)).loss, atol=1e-6)
    with pytest.raises(ValueError, match="N >= 1"):
        random_best_of_n(m, ids, b, 0, torch.Generator())


def test_schedule_in_shared_mode(deep):
    from duollm.routing.budget import Schedule

    m, ids = deep
    s = Schedule("big", 3, 1)
    res = search(m, ids, s)
    per = s.counts(9)
    by_k = {k: search(m, ids, Budget.exactly_big(k)) for k in set(per)}
    for t, k in enumerate(per):
        assert torch.equal(res.loss[:, t], by_k[k].loss[:, t]) and torch.equal(res.route[:, t], by_k[k].route[:, t])
        assert int((res.fixed_route[t] == Choice.BIG).sum()) == k
    # fixed is a realisable policy: the per-position route applied as such (not a shared-route loss)
    full = torch.cat([res.fixed_route, res.fixed_route[-1:]]).expand(2, -1, -1)
    assert torch.allclose(res.fixed_loss, token_loss(m(ids, route=full).logits, ids))
    # the fixed route of a group is the best single route over that group's positions
    losses, routes, _ = brute_force(m, ids, Budget.exactly_big(2))
    at = [t for t, k in enumerate(per) if k == 2]
    assert torch.equal(res.fixed_route[at[0]], routes[losses[:, :, at].sum((1, 2)).argmin()])


def test_walk_flops_count_the_tree():
    from duollm.oracle.search import walk_flops
    from duollm.routing.cost import cost_table, route_cost

    t = cost_table(2, 4, 16, 2, 10, 3)
    routes = Budget.free().routes(2)  # SS SB BS BB: 1 + 2 attention passes, 2 + 4 FFN passes, 4 heads
    tree, naive = walk_flops(routes, t)
    a, small, big = float(t.attn[0]), float(t.ffn[0, 1]), float(t.ffn[0, 2])
    assert tree == pytest.approx(3 * a + 3 * (small + big) + 4 * t.head)
    assert naive == pytest.approx(sum(float(route_cost(r, t)) for r in routes))
    one = Budget.exactly_big(2).routes(2)  # a single route: the walk is one forward
    assert walk_flops(one, t)[0] == pytest.approx(walk_flops(one, t)[1])


def test_fused_head_loss_equals_token_loss(deep):
    from duollm.oracle.loss import _fused_nll

    m, ids = deep
    h = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(0))
    ref = token_loss(m.head(h), ids)
    assert torch.allclose(_fused_nll(h, m.norm.weight, m.norm.eps, m.embed.weight, ids), ref, atol=1e-5)


def test_twelve_layers_all_routes_and_a_three_way_budget():
    """The sizes the study needs: all 2^12 routes in one walk, and a 3-way budget of a 12-layer model."""
    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=12, n_head=2, n_kv_head=2, d_model=8, d_big=16, d_small=2, vocab_size=16, max_seq_len=8)).eval()
    ids = torch.randint(0, 16, (1, 4), generator=torch.Generator().manual_seed(0))
    per_k = search_many(m, ids, [Budget.exactly_big(k) for k in range(13)] + [Budget.free()])
    assert [r.n_routes for r in per_k[:13]] == [comb(12, k) for k in range(13)] and per_k[13].n_routes == 4096
    assert torch.equal(per_k[13].loss, torch.stack([r.loss for r in per_k[:13]]).min(0).values)
    three = Budget.counts(big=1, small=10, skip=1)  # 132 routes
    res = search(m, ids, three)
    losses, routes, arg = brute_force(m, ids, three)
    assert res.n_routes == 132 and torch.allclose(res.loss, losses.min(0).values, atol=1e-6)
    assert torch.equal(res.route, routes[arg])

"""The oracle study over an evaluation set in batches equals the per-batch searches and brute force.
Run: pytest tests/oracle/test_sweep.py"""

import pytest
import torch

from duollm import Choice, DuoConfig, DuoLM
from duollm.oracle import brute_force, search
from duollm.oracle.sweep import sweep, work
from duollm.routing.budget import Budget, Schedule


@pytest.fixture
def setup():
    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=3, n_head=2, n_kv_head=2, d_model=16, d_big=64, d_small=4, vocab_size=32, max_seq_len=16)).eval()
    windows = torch.randint(0, 32, (5, 8), generator=torch.Generator().manual_seed(1))
    budgets = {
        "0": Budget.exactly_big(0),
        "1": Budget.exactly_big(1),
        "3": Budget.exactly_big(3),
        "free": Budget.free(),
        "2>0": Schedule("big", 2, 0),
    }
    return m, windows, budgets


def test_sweep_equals_searches_and_brute_force(setup):
    m, w, budgets = setup
    res = sweep(m, w, budgets, modes=("shared", "causal"), n_random=4, batch_size=2)
    assert torch.allclose(res.loss["all-small"], res.loss["shared/0"], atol=1e-6)
    assert torch.allclose(res.loss["all-big"], res.loss["shared/3"], atol=1e-6)
    for label in ("1", "free", "2>0"):
        whole = search(m, w, budgets[label])
        assert torch.allclose(res.loss[f"shared/{label}"], whole.loss, atol=1e-6)
        assert torch.equal(res.route[f"shared/{label}"], whole.route)
        causal = search(m, w, budgets[label], mode="causal")
        assert torch.allclose(res.loss[f"causal/{label}"], causal.loss, atol=1e-5)
    # fixed: the best single route over all windows, though the batches were searched apart
    losses, routes, _ = brute_force(m, w, budgets["1"])
    best = losses.double().sum((1, 2)).argmin()
    assert torch.equal(res.fixed["1"], routes[best])
    assert torch.allclose(res.loss["fixed/1"], losses[best], atol=1e-6)
    assert res.fixed["2>0"].shape == (7, 3) and res.n_routes["free"] == 8


def test_random_keeps_the_best_trial_and_the_budget(setup):
    m, w, budgets = setup
    res = sweep(m, w, {"1": budgets["1"]}, n_random=6, batch_size=2, seed=3)
    means = res.trials["1"]
    assert len(means) == 6 and float(res.loss["random/1"].double().mean()) == pytest.approx(min(means), abs=1e-6)
    assert bool(((res.route["random/1"] == Choice.BIG).sum(-1) == 1).all())
    # trial routes come from (seed, budget, trial, rank, batch) alone: batching does not change them
    again = sweep(m, w, {"1": budgets["1"]}, n_random=6, batch_size=2, seed=3)
    assert torch.equal(again.route["random/1"], res.route["random/1"])
    # oracle <= fixed per token; fixed <= a random trial on average over trials
    assert bool((res.loss["shared/1"] <= res.loss["fixed/1"] + 1e-6).all())
    assert sum(means) / len(means) >= float(res.loss["fixed/1"].double().mean())


def test_work_estimate(setup):
    m, w, budgets = setup
    est = work({"1": budgets["1"], "free": budgets["free"]}, 3, 10, 7, ("shared", "causal"), 2)  # 70 tokens
    assert est["shared"] == 8 * 70 and est["causal"] == (3 + 8) * 70 and est["baselines"] == (2 + 2 * 4) * 70
    est = work({"1": budgets["1"], "free": budgets["free"]}, 3, 10, 7, ("shared", "causal"), 2, {"1"}, {"free"})
    assert est["causal"] == 3 * 70 and est["baselines"] == (2 + 2 + 1 * 3) * 70


def test_causal_and_random_for_some_budgets(setup):
    """The causal oracle and random best-of-N run only for the budgets asked for; the causal oracle's batch size
    does not change its result."""
    m, w, budgets = setup
    res = sweep(m, w, budgets, ("shared", "causal"), 2, batch_size=2, causal_labels={"1", "2>0"}, causal_batch=5, random_labels={"3"})
    assert {k for k in res.loss if k.startswith("causal/")} == {"causal/1", "causal/2>0"}
    assert {k for k in res.loss if k.startswith("random/")} == {"random/3"} and set(res.trials) == {"3"}
    for label in ("1", "2>0"):
        assert torch.allclose(res.loss[f"causal/{label}"], search(m, w, budgets[label], mode="causal").loss, atol=1e-5)


def test_sweep_by_beam_and_groups(setup):
    """A beam that covers every route gives the exhaustive sweep's oracle columns; its `fixed` is the best of its
    candidates (each batch's best route), so never better than the exhaustive sweep's. With groups every column keeps
    to grouped routes."""
    m, w, budgets = setup
    ex = sweep(m, w, budgets, modes=("shared", "causal"), batch_size=2)
    bm = sweep(m, w, budgets, modes=("shared", "causal"), batch_size=2, beam=8)
    for label in ("1", "free", "2>0"):
        assert torch.equal(bm.loss[f"shared/{label}"], ex.loss[f"shared/{label}"])
        assert torch.allclose(bm.loss[f"causal/{label}"], ex.loss[f"causal/{label}"], atol=1e-5)
        assert float(bm.loss[f"fixed/{label}"].double().sum()) >= float(ex.loss[f"fixed/{label}"].double().sum()) - 1e-9
        assert bm.n_routes[label] == ex.n_routes[label]
    narrow = sweep(m, w, {"1": budgets["1"]}, batch_size=2, beam=1)
    assert bool((narrow.loss["shared/1"] >= ex.loss["shared/1"]).all())
    # groups of 2 over 3 layers: units of 2 and 1 layers, so layers 0 and 1 always agree
    g = sweep(m, w, {"1": budgets["1"], "free": budgets["free"]}, ("shared", "causal"), 3, batch_size=2, groups=2)
    for col, r in g.route.items():
        assert torch.equal(r[..., 0], r[..., 1]), col
    assert torch.equal(g.fixed["1"][0], g.fixed["1"][1]) and g.n_routes == {"1": 1, "free": 4}


def test_work_estimate_of_a_beam(setup):
    _, _, budgets = setup
    est = work({"1": budgets["1"]}, 3, 10, 7, ("shared", "causal"), 0, beam=1)  # 3 layers, 1 BIG: tree widths 1, 2, 3, 3
    assert est["shared"] == est["causal"] == (2 + 2 + 2) * 70
    grouped = work({"free": budgets["free"]}, 3, 10, 7, ("shared",), 0, groups=2)
    assert grouped["shared"] == 4 * 70

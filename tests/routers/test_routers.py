"""Routers: causal, budget-keeping, saved and loaded exactly, and trainable. Run: pytest tests/routers"""

import pytest
import torch

from duollm import Choice, DuoConfig, DuoLM
from duollm.routers import LinearRouter, calibrate, load_router, realised_on
from duollm.routers.linear import budget_penalty
from duollm.routers.route_head import RouteRouter, fit_priced_router, fit_route_router, layer0_states, set_price
from duollm.routers.storage import save_router
from duollm.routing.budget import Budget


@pytest.fixture
def model():
    torch.manual_seed(0)
    return DuoLM(DuoConfig(n_layer=4, n_head=2, n_kv_head=2, d_model=16, d_big=64, d_small=4, vocab_size=32, max_seq_len=32)).eval()


def random_linear(seed=1) -> LinearRouter:
    torch.manual_seed(seed)
    r = LinearRouter(4, 16, (Choice.SMALL, Choice.BIG))
    for lin in r.layers:
        torch.nn.init.normal_(lin.weight, std=3.0)
    return r.eval()


def random_route_router(seed=2) -> RouteRouter:
    torch.manual_seed(seed)
    r = RouteRouter(Budget.exactly_big(2).routes(4), 16)
    r.weight.normal_()
    return r.eval()


def ids(seed, n=4, T=12):
    return torch.randint(0, 32, (n, T), generator=torch.Generator().manual_seed(seed))


def random_priced_router(seed=3) -> RouteRouter:
    r = RouteRouter(Budget.free((Choice.BIG, Choice.SMALL)).routes(4), 16)
    r.weight.normal_(generator=torch.Generator().manual_seed(seed))
    r.price.fill_(0.3)
    return r.eval()


@pytest.mark.parametrize("make", [random_linear, random_route_router, random_priced_router])
def test_routers_are_causal(model, make):
    r = make()
    x = ids(0)
    base = model(x, router=r).route  # (B, T, L)
    assert base.shape == (4, 12, 4) and len(torch.unique(base)) > 1  # it does route
    for t in range(11):
        y = x.clone()
        y[:, t + 1 :] = (y[:, t + 1 :] + 7) % 32  # change every later token
        assert torch.equal(model(y, router=r).route[:, : t + 1], base[:, : t + 1])


def test_soft_one_hot_equals_hard_route(model):
    x = ids(1)
    route = torch.randint(1, 3, (4, 12, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    one_hot = torch.nn.functional.one_hot(route.long(), 3).float()  # (B, T, L, 3)
    soft = model(x, router=lambda l, u: one_hot[:, :, l])
    assert torch.allclose(soft.logits, model(x, route=route).logits, atol=1e-5) and torch.equal(soft.route, route)
    with pytest.raises(ValueError, match="not both"):
        model(x, route=route, router=lambda l, u: route[..., l])


def test_calibration_meets_the_budget_on_held_out_windows(model):
    r = random_linear()
    for lin in r.layers:  # a router that overspends BIG before calibration
        lin.bias.data[1] += 20.0
    assert realised_on(model, r, ids(5, 16))["big"] > 0.6
    got = calibrate(model, r, ids(5, 32), {Choice.BIG: 0.3, Choice.SMALL: 0.7})
    assert got["big"] == pytest.approx(0.3, abs=0.02)
    held_out = realised_on(model, r, ids(6, 32))
    assert held_out["big"] == pytest.approx(0.3, abs=0.02) and held_out["skip"] == 0


def test_three_way_calibration(model):
    torch.manual_seed(3)
    r = LinearRouter(4, 16, (Choice.SKIP, Choice.SMALL, Choice.BIG))
    for lin in r.layers:
        torch.nn.init.normal_(lin.weight, std=3.0)
    target = {Choice.BIG: 0.5, Choice.SMALL: 0.3, Choice.SKIP: 0.2}
    got = calibrate(model, r, ids(7, 32), target)
    assert got["big"] == pytest.approx(0.5, abs=0.02) and got["skip"] == pytest.approx(0.2, abs=0.02)


def test_scores_stay_fp32_under_autocast_so_close_layers_do_not_tie(model):
    r = LinearRouter(4, 16, (Choice.SMALL, Choice.BIG)).eval()
    for l, lin in enumerate(r.layers):  # constant scores per layer, 1e-3 apart: one value in bf16
        lin.bias.data[1] = 1.0 + 1e-3 * l
    with torch.autocast("cpu", torch.bfloat16):
        got = calibrate(model, r, ids(5, 8), {Choice.BIG: 0.5, Choice.SMALL: 0.5})
        assert r.logits(0, torch.randn(2, 3, 16)).dtype == torch.float32
        assert random_route_router().scores(torch.randn(2, 3, 16)).dtype == torch.float32
    assert got["big"] == 0.5  # the two top layers, exactly


def test_route_router_keeps_the_budget_exactly(model):
    route = model(ids(8), router=random_route_router()).route
    assert bool(((route == Choice.BIG).sum(-1) == 2).all())


@pytest.mark.parametrize("make", [random_linear, random_route_router, random_priced_router])
def test_save_load_round_trip(model, make, tmp_path):
    r = make()
    if isinstance(r, LinearRouter):
        r.offset.fill_(0.5)  # calibration offsets travel with the router
    save_router(r, tmp_path / "r", {"kind": "test"})
    back, info = load_router(tmp_path / "r")
    assert info["kind"] == "test" and back.options == r.options
    x = ids(9)
    assert torch.equal(model(x, router=back.eval()).route, model(x, router=r).route)


def test_paper_penalty_pulls_the_router_to_its_target(model):
    r = LinearRouter(4, 16, (Choice.SMALL, Choice.BIG))
    r.soft = True
    opt = torch.optim.AdamW(r.parameters(), lr=0.05)
    target = {Choice.BIG: 0.2, Choice.SMALL: 0.8}
    losses = []
    for _ in range(60):
        probs = []

        def soft(l, u, probs=probs):
            probs.append(r.probs(l, u))
            return r.spread(probs[-1])

        x = ids(10)
        out = model(x[:, :-1], router=soft, targets=x[:, 1:])
        loss = out.loss + 10 * budget_penalty(probs, r.options, target)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    mean_big = torch.stack([p[..., 1].mean() for p in probs]).mean()
    assert float(mean_big.detach()) == pytest.approx(0.2, abs=0.05)


def test_route_router_learns_a_predictable_route(model):
    """When one feature decides which route is cheaper, the fit finds it and beats the fixed route."""
    x = ids(11, 32, 16)
    feats = layer0_states(model, x)[:, :-1].flatten(0, 1)  # (N, C)
    R = 6
    losses = torch.ones(len(feats), R)
    losses[:, 0] -= 0.5 * (feats[:, 0] > 0)  # route 0 is cheap when feature 0 is positive ...
    losses[:, 1] -= 0.5 * (feats[:, 0] <= 0)  # ... route 1 otherwise
    r = RouteRouter(Budget.exactly_big(2).routes(4), 16)
    fit = fit_route_router(r, feats, losses)
    assert fit["holdout_loss"] < fit["holdout_fixed_loss"] - 0.1 and fit["ridge"] != float("inf")
    # with no signal (route gaps far below the per-token noise), the fit falls back to the fixed route: W = 0
    flat = torch.ones(len(feats), R) + torch.arange(R) * 1e-3
    fit = fit_route_router(r, feats, flat + 0.05 * torch.randn(len(feats), R, generator=torch.Generator().manual_seed(0)))
    assert fit["ridge"] == float("inf")
    assert len(torch.unique(r.scores(feats).argmin(-1))) == 1  # every token takes one route


def test_priced_router_buys_big_layers_for_hard_tokens(model):
    """Where BIG helps only the tokens that feature 0 marks as hard, the priced head spends its budget on them: the
    average meets it, the hard tokens take more BIG layers than the easy ones, and the loss beats the fixed route."""
    x = ids(12, 64, 16)
    feats = layer0_states(model, x)[:, :-1].flatten(0, 1)  # (N, C)
    r = RouteRouter(Budget.free((Choice.BIG, Choice.SMALL)).routes(4), 16)
    hard = feats[:, 0] > feats[:, 0].median()
    noise = 0.3 * torch.randn(len(feats), len(r.routes), generator=torch.Generator().manual_seed(0))
    losses = 3.0 - 0.5 * hard[:, None] * r.cost + noise  # each BIG layer saves 0.5 nats on a hard token, none on an easy one
    fit = fit_priced_router(r, feats, losses, spend=2)
    assert fit["ridge"] != float("inf") and fit["holdout_loss"] < fit["holdout_fixed_loss"] - 0.2
    spent = r.cost[r.picks(feats)]
    assert float(spent.mean()) == pytest.approx(2.0, abs=0.1)
    assert float(spent[hard].mean()) > float(spent[~hard].mean()) + 2
    # with no signal it falls back to the fixed route: every token takes the train part's best route of 2 BIG layers
    fit = fit_priced_router(r, feats, 1.0 + noise, spend=2)
    assert fit["ridge"] == float("inf") and fit["price"] == 0.0
    picks = r.picks(feats)
    assert len(torch.unique(picks)) == 1 and float(r.cost[picks[0]]) == 2.0


def test_cost_counts_the_budgets_choice():
    skip = RouteRouter(Budget.free((Choice.BIG, Choice.SKIP)).routes(4), 16)
    assert torch.equal(skip.cost, (skip.routes == Choice.SKIP).sum(1).float())  # big/skip budgets count SKIP
    big = random_priced_router()
    assert torch.equal(big.cost, (big.routes == Choice.BIG).sum(1).float())


def test_set_price_meets_any_spend(model):
    feats = layer0_states(model, ids(13, 16, 16)).flatten(0, 1)
    r = random_priced_router()
    for spend in (0.5, 1.0, 2.0, 3.5):
        assert set_price(r, feats, spend) == pytest.approx(spend, abs=0.05)
        assert float(r.cost[r.picks(feats)].mean()) == pytest.approx(spend, abs=0.05)


def test_route_router_saved_before_prices_loads(tmp_path):
    """A route head saved before the price existed loads with price 0 (its routes all cost the same)."""
    from safetensors.torch import load_file, save_file

    r = random_route_router()
    save_router(r, tmp_path / "r", {"kind": "test"})
    state = load_file(tmp_path / "r" / "router.safetensors")
    del state["price"]
    save_file(state, tmp_path / "r" / "router.safetensors")
    back, _ = load_router(tmp_path / "r")
    assert float(back.price) == 0.0 and torch.equal(back.weight, r.weight)

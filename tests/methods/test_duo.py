"""The `duo-random` entrant (duollm/methods/duo.py): hand-counted FLOPs, random routes in training, the best fixed
route at the budget, kept through save and load. Run: pytest tests/methods/test_duo.py"""

import pytest
import torch

from duollm.errors import DuoError
from duollm.methods import build, load_entrant, save_entrant
from duollm.methods.duo import big_layers_for_budget, mixed_positions, spread_route
from duollm.oracle.search import brute_force
from duollm.routing.budget import Budget
from duollm.routing.route import format_route


def test_flops_against_a_hand_count(cfg):
    # cfg: L=2, d=32, 4 heads (kv 4), d_big=128, d_small=8, V=64; budget 0.5 → one BIG layer, one SMALL
    model = build("duo-random", cfg, route="SB").eval()
    flops = model(torch.zeros(1, 3, dtype=torch.long)).flops  # positions 0, 1, 2
    d, V = 32, 64
    for p in range(3):
        attn = 2 * d * (4 * d) + 4 * d * (p + 1)
        assert flops[0, p].item() == 2 * attn + 6 * d * 8 + 6 * d * 128 + 2 * d * V


def test_training_draws_random_routes_and_counts_them(cfg, ids):
    torch.manual_seed(0)
    model = build("duo-random", cfg, p_big=0.5, p_small=0.25, p_skip=0.25).train()
    out = model(ids)
    assert 0 < out.stats["skip"] < 1 and 0 < out.stats["small"] < 1 and 0 < out.stats["big"] < 1
    d, V = 32, 64
    fixed = 2 * (2 * d * (4 * d)) + 2 * d * V  # projections and head; FFN and scores vary
    ffn = out.flops[0] - fixed - torch.tensor([2 * 4 * d * (p + 1) for p in range(ids.shape[1])], dtype=torch.float64)
    assert set(ffn.tolist()) <= {a + b for a in (0, 6 * d * 8, 6 * d * 128) for b in (0, 6 * d * 8, 6 * d * 128)}
    assert len(set(ffn.tolist())) > 1  # tokens took different routes


def test_the_budget_picks_k_big_layers(cfg):
    L4 = type(cfg)(**{**cfg.__dict__, "n_layer": 4})
    r = 8 / 128  # SMALL's FLOPs over BIG's
    assert big_layers_for_budget(L4, 0.5) == round((0.5 - r) / (1 - r) * 4)
    assert big_layers_for_budget(L4, 1.0) == 4 and big_layers_for_budget(L4, 0.01) == 0
    assert format_route(spread_route(4, 2)) == "SBSB" and format_route(spread_route(4, 4)) == "BBBB"


def test_calibrate_picks_the_best_fixed_route_and_saves_it(cfg, ids, tmp_path):
    torch.manual_seed(0)
    model = build("duo-random", cfg, budget=(128 + 8) / 256).eval()  # one BIG layer, one SMALL: a count meets it
    frac = model.calibrate(ids, batch_size=2)  # two batches: the totals add up over them
    losses, routes, _ = brute_force(model.duo, ids, Budget.exactly_big(1))  # (R, B, T-1)
    best = routes[losses.double().sum((1, 2)).argmin()]
    assert torch.equal(model.route, best) and model.options["route"] == format_route(best)
    assert model.mix == 0 and model.options["mix_route"] == ""
    assert frac == pytest.approx((128 + 8) / 256)
    save_entrant(model, tmp_path / "duo")
    back = load_entrant(tmp_path / "duo").eval()
    assert torch.equal(back.route, best)
    torch.testing.assert_close(back(ids).logits, model.duo(ids, route=best).logits)


def test_a_budget_between_two_counts_mixes_their_best_routes(cfg, ids, tmp_path):
    # budget 0.5 of two layers: no BIG layer spends 16/256, one spends 136/256; a fraction 0.5 - 16/256 over 120/256
    # of the positions takes the best route with one BIG layer
    torch.manual_seed(0)
    model = build("duo-random", cfg, budget=0.5).eval()
    frac = model.calibrate(ids)
    losses, routes, _ = brute_force(model.duo, ids, Budget.exactly_big(1))
    assert format_route(model.route) == "SS" and torch.equal(model.mix_route, routes[losses.double().sum((1, 2)).argmin()])
    assert model.mix == pytest.approx((0.5 - 16 / 256) / (120 / 256))
    T = ids.shape[1]
    second = mixed_positions(torch.arange(T), model.mix)  # (T,) bool
    assert int(second[: T - 1].sum()) == round(model.mix * (T - 1))  # the fraction, to half a position
    assert frac == pytest.approx((16 + (120 * second[: T - 1].double().mean().item())) / 256)
    full = torch.where(second[None, :, None], model.mix_route, model.route).expand(ids.shape[0], T, 2)  # (B, T, L)
    out = model(ids)
    torch.testing.assert_close(out.logits, model.duo(ids, route=full).logits)
    d, V = 32, 64
    hand = [2 * (2 * d * 4 * d + 4 * d * (t + 1)) + 2 * d * V + (6 * d * (8 + 128) if second[t] else 2 * 6 * d * 8) for t in range(T)]
    assert out.flops[0].tolist() == hand
    save_entrant(model, tmp_path / "duo")
    back = load_entrant(tmp_path / "duo").eval()
    assert back.mix == model.mix and torch.equal(back.mix_route, model.mix_route)
    torch.testing.assert_close(back(ids).logits, out.logits)
    cache = back.new_cache(ids.shape[0], T)  # decoding one token at a time takes the same positions' routes
    steps = torch.cat([back(ids[:, t : t + 1], cache=cache).logits for t in range(T)], dim=1)
    torch.testing.assert_close(steps, out.logits, atol=1e-5, rtol=1e-4)


def test_options_are_checked(cfg):
    with pytest.raises(DuoError, match="route"):
        build("duo-random", cfg, route="BBB")  # 3 letters, 2 layers
    with pytest.raises(DuoError, match="mix"):
        build("duo-random", cfg, mix=0.5)  # a mix needs its second route
    with pytest.raises(DuoError, match="probabilities"):
        build("duo-random", cfg, p_big=0.9, p_small=0.9)
    with pytest.raises(DuoError, match="budget"):
        build("duo-random", cfg, budget=0)


def test_calibration_considers_only_the_choices_the_model_trained_on(cfg):
    L4 = type(cfg)(**{**cfg.__dict__, "n_layer": 4})
    assert all(k == 0 for k, _ in build("duo-random", L4, p_big=0.0, p_small=1.0, budget=0.3).candidate_counts())
    assert all(k + m == 4 for k, m in build("duo-random", L4, budget=0.3).candidate_counts())  # no SKIP: p_skip = 0

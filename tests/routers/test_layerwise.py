"""The layer-wise supervised router's targets, states and fit. Run: pytest tests/routers/test_layerwise.py"""

import torch

from duollm.model.transformer import DuoConfig, DuoLM
from duollm.routers.layerwise import (
    choose_shrink,
    expected_loss,
    fit_expected_router,
    fit_layer_router,
    flip_values,
    mean_values,
    route_digits,
    route_index,
    shrink_router,
    take_top,
    teacher_states,
)
from duollm.routers.linear import LinearRouter
from duollm.routing.budget import Budget
from duollm.routing.route import Choice
from duollm.routing.sample import random_routes

B, S = Choice.BIG, Choice.SMALL


def test_flip_values_by_hand():
    """Two layers, options (SMALL, BIG): the free route set is SS, SB, BS, BB (lexicographic)."""
    cand = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 5.0, 7.0]])
    route = torch.tensor([[B, B], [S, S]], dtype=torch.uint8)  # each token's oracle route (its lowest loss)
    v = flip_values(cand, route, (S, B), B)
    # token 0 at BB: layer 0 → SB (3) − BB (1) = 2, layer 1 → BS (2) − BB (1) = 1
    # token 1 at SS: layer 0 → SS (1) − BS (5) = −4, layer 1 → SS (1) − SB (2) = −1
    assert torch.equal(v, torch.tensor([[2.0, 1.0], [-4.0, -1.0]]))
    skip = flip_values(cand, route, (S, B), S)  # the value of the other option is the negative
    assert torch.equal(skip, -v)


def test_mean_values_by_hand_and_by_brute_force():
    """Two layers, SS, SB, BS, BB: the value of BIG at a layer is the mean over the other layer's settings."""
    cand = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 5.0, 7.0]])
    v = mean_values(cand, (S, B), B)
    # token 0, layer 0: mean(SS, SB) − mean(BS, BB) = 3.5 − 1.5; layer 1: mean(SS, BS) − mean(SB, BB) = 3 − 2
    assert torch.equal(v, torch.tensor([[2.0, 1.0], [-4.5, -1.5]]))  # token 1: 1.5 − 6, 3 − 4.5
    assert torch.equal(mean_values(cand, (S, B), S), -v)
    routes = Budget.free((S, B)).routes(4)  # four layers, against the routes themselves
    cand = torch.randn(3, len(routes), generator=torch.Generator().manual_seed(0))
    for layer in range(4):
        big = routes[:, layer] == B
        assert torch.allclose(mean_values(cand, (S, B), B)[:, layer], cand[:, ~big].mean(1) - cand[:, big].mean(1))


def test_random_routes_are_seeded_halves():
    r = random_routes((64, 50, 4), (S, B), seed=3)
    assert torch.equal(r, random_routes((64, 50, 4), (S, B), seed=3)) and not torch.equal(r, random_routes((64, 50, 4), (S, B), seed=4))
    assert set(r.unique().tolist()) == {int(S), int(B)} and abs(float((r == B).float().mean()) - 0.5) < 0.02


def test_teacher_states_follow_the_route():
    torch.manual_seed(0)
    model = DuoLM(DuoConfig()).eval()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 6))
    route = torch.randint(0, 3, (2, 5, 2), dtype=torch.uint8)
    states = teacher_states(model, ids, route)
    assert len(states) == 2 and states[0].shape == (2 * 5, 32)
    seen = []
    full = torch.cat([route, route[:, -1:]], 1)

    def record(l, u):
        seen.append(u[:, :-1].flatten(0, 1))
        return full[..., l]

    with torch.no_grad():
        model(ids, router=record)
    assert all(torch.allclose(a, b) for a, b in zip(states, seen, strict=True))


def test_fit_recovers_a_linear_value():
    """With a value that is linear in the state, the fit beats a constant on held-out tokens and ranks tokens right."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 8, generator=g)
    w = torch.randn(8, generator=g)
    noise = torch.randn(400, generator=g)
    values = torch.stack([X @ w, noise], 1)  # layer 0 linear in the state, layer 1 noise the state cannot predict
    router = LinearRouter(2, 8, (S, B))
    with torch.no_grad():
        fit = fit_layer_router(router, [X, X], values, B)
    assert fit["holdout_mse"][0] < 0.01 * fit["holdout_mse_constant"][0]
    assert fit["ridge"][0] != float("inf") and fit["ridge"][1] == float("inf")  # no fit kept for noise
    assert torch.equal(router.layers[1].weight, torch.zeros(2, 8))
    score = router.logits(0, X)[:, router.options.index(B)] - router.logits(0, X)[:, router.options.index(S)]
    assert torch.corrcoef(torch.stack([score, X @ w]))[0, 1] > 0.99


def test_route_index_names_the_route_taken():
    routes = Budget.free((S, B)).routes(4)
    take = torch.tensor([[True, False, False, True], [False, True, True, True], [False] * 4])
    assert torch.equal(routes[route_index(take, (S, B), B)], torch.where(take, int(B), int(S)).to(torch.uint8))
    skip = Budget.free((Choice.SKIP, B)).routes(4)  # the counted choice the smaller option: SKIP of big/skip
    assert torch.equal(skip[route_index(take, (Choice.SKIP, B), Choice.SKIP)], torch.where(take, int(Choice.SKIP), int(B)).to(torch.uint8))


def test_take_top_spends_the_budget_on_the_top_scores():
    scores = torch.tensor([[5.0, 1.0, 0.0], [4.0, 3.0, 2.0]])
    assert torch.equal(take_top(scores, 1), torch.tensor([[True, False, False], [True, False, False]]))
    assert torch.equal(take_top(scores, 2), torch.tensor([[True, False, False], [True, True, True]]))  # 5, 4, 3, 2
    assert not take_top(scores, 0).any()


def _table(value: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
    """Every route's loss (N, R) when a token's loss falls by value[n, l] at each layer that takes BIG."""
    return -(value[:, None, :] * (routes[None] == B).float()).sum(-1)


def test_choose_shrink_picks_the_factor_that_matches_the_truth():
    """Layers 0 and 1 are worth more than 2 and 3 to every token, and tokens differ by h: the true value of BIG is
    a_l + h, the prediction a_l + 8h over-rates the tokens' part eightfold, so s = 1/8 undoes it; s = 1 spreads the
    tokens' counts wider than pays, and the fixed route (layers 0 and 1) ignores h."""
    g = torch.Generator().manual_seed(0)
    routes = Budget.free((S, B)).routes(4)
    a = torch.tensor([1.0, 1.0, 0.0, 0.0])
    h = torch.randn(4000, 1, generator=g)
    table = _table(a + h, routes)
    pred = a + 8 * h
    out = choose_shrink(pred[2000:], a, table[:2000], table[2000:], (S, B), B, 2)
    losses = out["shrink_losses"]
    assert out["shrink"] == 0.125 and "fixed_route" not in out
    assert losses["0.125"] < losses["0.0"] and losses["0.125"] < losses["1.0"]


def test_choose_shrink_falls_back_to_the_fixed_route_on_noise():
    g = torch.Generator().manual_seed(1)
    routes = Budget.free((S, B)).routes(4)
    a = torch.tensor([0.2, 1.0, 0.1, 0.8])  # the best route of two BIG layers: SBSB, index 0b0101
    table = _table(a + 0.5 * torch.randn(4000, 4, generator=g), routes)
    pred = torch.randn(2000, 4, generator=g)  # knows nothing of the tokens
    out = choose_shrink(pred, a, table[:2000], table[2000:], (S, B), B, 2)
    assert out["shrink"] == 0.0 and out["fixed_route"] == 0b0101


def test_shrink_router_scales_scores_about_the_mean_or_sets_the_fixed_route():
    g = torch.Generator().manual_seed(2)
    router = LinearRouter(3, 5, (S, B))
    with torch.no_grad():
        for lin in router.layers:
            lin.weight.normal_(generator=g), lin.bias.normal_(generator=g)
    X = torch.randn(50, 5, generator=g)
    k = router.options.index(B)
    before = torch.stack([router.logits(l, X)[:, k] for l in range(3)], 1)
    other = torch.stack([router.logits(l, X)[:, 1 - k] for l in range(3)], 1)
    mean = torch.tensor([0.3, -1.0, 2.0])
    with torch.no_grad():
        shrink_router(router, B, 0.25, mean)
    after = torch.stack([router.logits(l, X)[:, k] for l in range(3)], 1)
    assert torch.allclose(after, 0.25 * before + 0.75 * mean, atol=1e-5)
    assert torch.equal(other, torch.stack([router.logits(l, X)[:, 1 - k] for l in range(3)], 1))  # the other score stays
    fixed = LinearRouter(3, 5, (S, B))
    with torch.no_grad():
        shrink_router(fixed, B, 0.0, mean, fixed_route=0b101)
    assert torch.equal(torch.stack([fixed(l, X) for l in range(3)], -1), torch.tensor([B, S, B], dtype=torch.uint8).expand(50, 3))


def test_fit_with_a_table_shrinks_the_router():
    """fit_layer_router with every route's loss: the factor chosen on held-out tokens is applied to the router."""
    g = torch.Generator().manual_seed(3)
    routes = Budget.free((S, B)).routes(2)
    X = torch.randn(2000, 4, generator=g)
    value = torch.stack([1 + X[:, 0], X[:, 1]], 1)  # layer 0 worth more, and both vary with the state
    router = LinearRouter(2, 4, (S, B))
    with torch.no_grad():
        fit = fit_layer_router(router, [X, X], value, B, table=_table(value, routes), spend=1)
    assert fit["shrink"] == 1.0  # the values are the truth and add up: nothing to undo
    assert fit["shrink_losses"]["1.0"] < fit["shrink_losses"]["0.0"]


def test_route_digits_mark_the_counted_layers():
    routes = Budget.free((S, B)).routes(3)
    assert torch.equal(route_digits((S, B), B, 3), (routes == B).float())
    assert torch.equal(route_digits((Choice.SKIP, B), Choice.SKIP, 3), (Budget.free((Choice.SKIP, B)).routes(3) == Choice.SKIP).float())


def test_expected_loss_by_brute_force():
    """The mean of every route's loss weighted by its probability under independent per-layer choices; a sure policy
    gives its route's loss, an undecided one the plain mean."""
    g = torch.Generator().manual_seed(4)
    routes = Budget.free((S, B)).routes(3)
    digits = route_digits((S, B), B, 3)
    table = torch.randn(5, 8, generator=g, dtype=torch.float64)
    scores = torch.randn(5, 3, generator=g, dtype=torch.float64)
    p = torch.sigmoid(scores)
    prob = torch.stack([torch.where(routes[r] == B, p, 1 - p).prod(1) for r in range(8)], 1)  # (5, 8)
    assert torch.allclose(expected_loss(scores, table, digits), (prob * table).sum(1))
    assert torch.allclose(expected_loss(torch.zeros(5, 3, dtype=torch.float64), table, digits), table.mean(1))
    sure = 30.0 * (2 * digits[[5, 0, 7, 2, 2]] - 1).double()  # routes 5, 0, 7, 2, 2 taken for certain
    assert torch.allclose(expected_loss(sure, table, digits), table[torch.arange(5), [5, 0, 7, 2, 2]])


def _saturating(h: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
    """Every route's loss when layer 0 is worth 1 to every token and each further BIG layer is worth h to a token,
    up to two of them: the gain saturates, so a hard token wants layer 0 and two more, an easy one layer 0 alone."""
    big = (routes == B).float()
    return -(big[None, :, 0] + h * big[None, :, 1:].sum(-1).clamp(max=2))


def test_fit_expected_router_moves_tokens_off_the_fixed_route_where_it_pays():
    g = torch.Generator().manual_seed(5)
    routes = Budget.free((S, B)).routes(4)
    h = torch.rand(4000, 1, generator=g)
    X = torch.cat([h, torch.randn(4000, 3, generator=g)], 1)  # the state shows h
    table = _saturating(h, routes)
    router = LinearRouter(4, 4, (S, B))
    fit = fit_expected_router(router, [X] * 4, table, B, 2, steps=300, lr=0.05)
    assert "fixed_route" not in fit and fit["holdout_loss"] < fit["holdout_fixed_loss"] - 0.02
    take = torch.stack([router(l, X[:, None])[:, 0] == B for l in range(4)], 1)  # hard decisions, no offset yet
    assert take[:, 0].float().mean() > 0.9  # layer 0 pays for everyone
    hard, easy = h[:, 0] > 0.8, h[:, 0] < 0.2
    assert take[hard].sum(1).float().mean() > take[easy].sum(1).float().mean() + 0.5  # the hard tokens buy more


def test_fit_expected_router_falls_back_to_the_fixed_route_on_noise():
    g = torch.Generator().manual_seed(6)
    routes = Budget.free((S, B)).routes(4)
    h = torch.rand(4000, 1, generator=g)
    table = _saturating(h, routes)
    router = LinearRouter(4, 4, (S, B))
    fit = fit_expected_router(router, [torch.randn(4000, 4, generator=g)] * 4, table, B, 2, steps=100, lr=0.05)
    best = int(
        torch.nonzero(route_digits((S, B), B, 4).sum(1) == 2)[table[:3000][:, route_digits((S, B), B, 4).sum(1) == 2].mean(0).argmin()]
    )
    assert fit["fixed_route"] == best and routes[best][0] == B

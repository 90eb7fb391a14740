"""The layer-wise supervised router's targets, states and fit. Run: pytest tests/routers/test_layerwise.py"""

import torch

from duollm.model.transformer import DuoConfig, DuoLM
from duollm.routers.layerwise import fit_layer_router, flip_values, mean_values, random_routes, teacher_states
from duollm.routers.linear import LinearRouter
from duollm.routing.budget import Budget
from duollm.routing.route import Choice

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

"""FFN-SkipLLM and confidence early exit as routers: the router interface they use, their rules against a slow
per-token re-derivation, causality, decoding with a KV cache, protected layers and positions, and thresholds that
never fire. Run: pytest tests/routers/test_training_free.py"""

import pytest
import torch
import torch.nn.functional as F

from duollm import Choice, DuoConfig, DuoLM
from duollm.model.decode import Decoder, generate
from duollm.routers.training_free import EarlyExit, FFNSkip

L = 6


@pytest.fixture(scope="module")
def model():
    """6 layers whose FFNs move the residual stream a lot (cos(x, y) spread over 0.85-0.98) and whose head is
    confident enough to vary (max probability 0.06-0.14): thresholds inside those ranges give mixed routes."""
    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=L, n_head=4, n_kv_head=2, d_model=16, d_big=64, d_small=4, vocab_size=32, max_seq_len=40)).eval()
    with torch.no_grad():
        for b in m.blocks:
            b.ffn.big.down.weight.mul_(300), b.ffn.small.down.weight.mul_(300)
        m.embed.weight.mul_(5)
    return m


@pytest.fixture
def ids():
    return torch.randint(0, 32, (3, 20), generator=torch.Generator().manual_seed(1))


class Replay:
    """A router that replays a route (B, T, L) and records what the interface shows it: the positions, and per
    layer the cosine of the residual stream around the FFN and the head's confidence after it."""

    def __init__(self, route=None):
        self.route, self.cos, self.conf, self.positions = route, [], [], []

    def start(self, model, positions):
        self.model = model
        self.positions.append(positions)

    def __call__(self, layer, u):
        if self.route is None:
            return torch.full(u.shape[:2], Choice.BIG, dtype=torch.uint8)
        return self.route[..., layer]

    def observe(self, layer, x, y):
        self.cos.append(F.cosine_similarity(x, y, dim=-1))  # (B, T)
        self.conf.append(self.model.head(y).softmax(-1).amax(-1))  # (B, T)


@torch.no_grad()
def seen(model, ids, route=None) -> Replay:
    r = Replay(route)
    model(ids, router=r)
    return r


def between(values: torch.Tensor) -> float:
    """A threshold in the middle half of `values`, at their widest gap: far from every value, so that the float
    noise between a full forward and decoding cannot move a decision across it."""
    v = values.flatten().sort().values
    lo, hi = len(v) // 4, 3 * len(v) // 4
    i = lo + int(v[lo + 1 : hi + 1].sub(v[lo:hi]).argmax())
    return float(v[i] + v[i + 1]) / 2


def skipllm(model, ids, **kw) -> FFNSkip:
    cos = torch.stack(seen(model, ids).cos[1:-1])  # (L-2, B, T): the layers that can decide a skip
    return FFNSkip(between(cos), **{"first": 1, "last": 1, "warmup": 3, "window": 1, **kw})


def early_exit(model, ids, **kw) -> EarlyExit:
    conf = torch.stack(seen(model, ids).conf[:-1])  # (L-1, B, T)
    return EarlyExit(between(conf), **kw)


POLICIES = {
    "skipllm": lambda m, ids: skipllm(m, ids),
    "skipllm-window-2": lambda m, ids: skipllm(m, ids, window=2, first=2),
    "exit": lambda m, ids: early_exit(m, ids),
    "exit-small-every-2": lambda m, ids: early_exit(m, ids, to=Choice.SMALL, every=2, first=1),
}


def test_the_interface_shows_positions_and_the_stream_around_each_ffn(model, ids):
    r = seen(model, ids)
    assert torch.equal(r.positions[0], torch.arange(20).expand(3, 20))
    assert len(r.cos) == L and r.cos[0].shape == (3, 20)
    dec = Replay()
    generate(model, ids[:, :5], 4, router=dec)
    assert [p[0].tolist() for p in dec.positions] == [[0, 1, 2, 3, 4], [5], [6], [7]]  # prefill, then one per step
    plain = model(ids, router=lambda layer, u: torch.full(u.shape[:2], Choice.BIG, dtype=torch.uint8))  # routers without the methods
    assert torch.allclose(plain.logits, model(ids).logits, atol=1e-6)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_routes_are_mixed_and_causal(model, ids, name):
    router = POLICIES[name](model, ids)
    with torch.no_grad():
        route = model(ids, router=router).route
        changed = ids.clone()
        changed[:, 10:] = torch.randint(0, 32, (3, 10), generator=torch.Generator().manual_seed(7))
        later = model(changed, router=router).route
    assert len(route.unique()) > 1, "the threshold should split the tokens"
    assert torch.equal(route[:, :10], later[:, :10])


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_decoding_with_the_cache_equals_a_full_forward(model, ids, name):
    router = POLICIES[name](model, ids)
    out = generate(model, ids[:, :6], 14, router=router)  # prefill 6, then 13 steps of one token
    with torch.no_grad():
        full = model(out.ids[:, :-1], router=router)
        static = model(out.ids[:, :-1], route=out.route)  # the same decisions as a per-token route
    assert torch.equal(out.route, full.route) and len(out.route[:, 6:].unique()) > 1
    assert torch.equal(full.logits[:, 5:].argmax(-1), out.ids[:, 6:])  # greedy: the forward predicts the decoded tokens
    assert torch.allclose(static.logits, full.logits, atol=1e-5)
    fast = Decoder(model, 4, 20, router=router, graphs=False).generate(ids[:, :6], 14)  # device-side positions
    assert torch.equal(fast.ids, out.ids) and torch.equal(fast.route, out.route)


def skip_reference(router: FFNSkip, cos: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """FFN-SkipLLM token by token: (L, B, T) cosines under the route taken → (B, T, L) route."""
    n, B, T = cos.shape
    route = torch.full((B, T, n), Choice.BIG, dtype=torch.uint8)
    for b in range(B):
        for t in range(T):
            ran = []  # cosines of the FFNs this token ran, in order
            for l in range(n):
                saturated = len(ran) >= router.window and all(c >= router.threshold for c in ran[-router.window :])
                if router.first <= l < n - router.last and positions[b, t] >= router.warmup and saturated:
                    route[b, t, l] = Choice.SKIP
                else:
                    ran.append(float(cos[l, b, t]))
    return route


@pytest.mark.parametrize("window", [1, 2])
def test_skipllm_follows_its_rule_and_protects_layers_and_warmup(model, ids, window):
    router = skipllm(model, ids, window=window, first=2 if window == 2 else 1)
    with torch.no_grad():
        route = model(ids, router=router).route
    cos = torch.stack(seen(model, ids, route).cos)  # (L, B, T) under the route taken
    assert torch.equal(route, skip_reference(router, cos, torch.arange(20).expand(3, 20)))
    assert (route[..., : router.first] == Choice.BIG).all() and (route[..., L - router.last :] == Choice.BIG).all()
    assert (route[:, : router.warmup] == Choice.BIG).all() and (route == Choice.SKIP).any()
    assert set(route.unique().tolist()) <= {Choice.SKIP, Choice.BIG}


def test_skipllm_defaults_protect_two_layers_each_end_and_eight_positions(model, ids):
    r = FFNSkip(0.01)  # every FFN saturates: everything unprotected skips
    assert (r.first, r.last, r.warmup, r.window) == (2, 2, 8, 2)
    with torch.no_grad():
        route = model(ids, router=r).route
    expected = torch.full((3, 20, L), Choice.BIG, dtype=torch.uint8)
    expected[:, 8:, 2 : L - 2] = Choice.SKIP
    assert torch.equal(route, expected)


def test_exit_follows_its_rule(model, ids):
    router = early_exit(model, ids, every=2, first=1)  # checks after layers 1 and 3 (5 is the last)
    assert router.checked(L) == [1, 3]
    with torch.no_grad():
        route = model(ids, router=router).route
    conf = torch.stack(seen(model, ids, route).conf)  # (L, B, T) under the route taken
    for b in range(3):
        for t in range(20):
            exits = [c for c in (1, 3) if conf[c, b, t] >= router.threshold]
            e = exits[0] if exits else L - 1  # the layer after which the token exits
            expected = [Choice.BIG] * (e + 1) + [Choice.SKIP] * (L - 1 - e)
            assert route[b, t].tolist() == expected
            assert int(router.head_checks(route[b, t])) == len([c for c in (1, 3) if c <= e])
    assert (route == Choice.SKIP).any() and (route[..., -1] == Choice.SKIP).any()


def test_head_checks_by_hand():
    r = EarlyExit(0.5, every=2, first=1)  # 6 layers: checks after layers 1 and 3
    routes = [("BB----", 1), ("BBBB--", 2), ("BBBBBB", 2), ("BBSSSS", 1)]
    big = {"B": Choice.BIG, "-": Choice.SKIP, "S": Choice.SMALL}
    route = torch.tensor([[big[c] for c in s] for s, _ in routes], dtype=torch.uint8)  # (4, L)
    assert r.head_checks(route).tolist() == [n for _, n in routes]
    assert EarlyExit(0.5).head_checks(route).tolist() == [2, 4, 5, 2]  # every layer but the last


@torch.no_grad()
def test_thresholds_that_never_fire_are_all_big_exactly(model, ids):
    dense = model(ids).logits
    for router in (FFNSkip(1.5, first=0, last=0, warmup=0, window=1), EarlyExit(1.5)):
        out = model(ids, router=router)
        assert (out.route == Choice.BIG).all() and torch.equal(out.logits, dense)
    out = generate(model, ids[:, :5], 6, router=FFNSkip(1.5, first=0, last=0, warmup=0, window=1))
    assert torch.equal(out.ids, generate(model, ids[:, :5], 6).ids)


def test_state_resets_between_batches(model, ids):
    """A stateful router used on one batch, then another of a different shape, then the first again."""
    router = POLICIES["skipllm"](model, ids)
    with torch.no_grad():
        first = model(ids, router=router).route
        model(ids[:1, :7], router=router)
        again = model(ids, router=router).route
    assert torch.equal(first, again)

"""The `halting` entrant (duollm/methods/halting.py): hand-counted FLOPs with exits, the cumulative rule by hand,
threshold 1 as the dense model, the halting distribution, its prior, the expected loss and the KL by hand, options and
calibration. Run: pytest tests/methods/test_halting.py"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from duollm.errors import DuoError
from duollm.methods import build, load_entrant, save_entrant
from duollm.methods.halting import Halting, halting_log_probs
from duollm.model.transformer import DuoConfig

DEEP = dict(n_layer=3, n_head=4, n_kv_head=2, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)


def halting(cfg, **options) -> Halting:
    torch.manual_seed(0)
    return build("halting", cfg, **options).eval()


def spread(model: Halting) -> Halting:
    """The halting heads' weights scaled up: λ spread over (0, 1) instead of near 1/2 as at init."""
    with torch.no_grad():
        for h in model.halt:
            h.weight.mul_(20)
    return model


def head(model, x):
    return F.linear(model.norm(x), model.embed.weight)  # (B, T, V)


def lam(model, l, x):
    """λ_l (B, T) of the state x after layer l, by hand: the halting head over the final norm's output."""
    return torch.sigmoid(model.norm(x) @ model.halt[l].weight[0] + model.halt[l].bias[0])


def test_flops_against_a_hand_count(cfg, ids):
    # cfg: L=2, d=32, 4 heads (kv 4, head size 8), d_big=128, V=64; one halting head, after layer 0
    model = halting(cfg)  # threshold 0.5; at init λ is near 1/2: a mix
    T = ids.shape[1]
    x0 = model.blocks[0](model.embed(ids), model.rope_cos[:T], model.rope_sin[:T])
    exited = lam(model, 0, x0) >= 0.5  # (B, T): the cumulative probability after layer 0 is λ_0
    assert 0 < exited.float().mean() < 1
    out = model(ids)
    d, V, B, T = 32, 64, *ids.shape
    for b in range(B):
        for p in range(T):
            layer = 2 * d * (4 * d) + 4 * d * (p + 1) + 6 * d * 128  # q, k, v, o; scores over p + 1 keys; BIG's FFN
            kv = 2 * d * (2 * 4 * 8)  # layer 1's key and value of an exited token
            expected = layer + (kv if exited[b, p] else layer) + 2 * d + 2 * d * V  # the halting head, the head once
            assert out.flops[b, p].item() == expected
    torch.testing.assert_close(out.logits[exited], head(model, x0)[exited])  # an exited token: the frozen state's


def test_the_cumulative_rule_by_hand(ids):
    cfg = DuoConfig(**DEEP)
    model = spread(halting(cfg, threshold=0.7))
    B, T = ids.shape
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    x0 = model.blocks[0](model.embed(ids), cos, sin)
    l0 = lam(model, 0, x0)
    x1 = torch.where((l0 >= 0.7)[..., None], x0, model.blocks[1](x0, cos, sin))  # frozen, or layer 1 (keys from x0)
    l1 = lam(model, 1, x1)
    cum = torch.stack([l0, l0 + (1 - l0) * l1], -1)  # (B, T, 2): p_0, then p_0 + p_1
    exit = torch.where(cum[..., 0] >= 0.7, 0, torch.where(cum[..., 1] >= 0.7, 1, 2))  # (B, T)
    assert len(exit.unique()) == 3  # tokens exit after each layer
    assert torch.equal(model.trunk(ids, None, *model.exit_rule()).exit, exit)
    out = model(ids)
    assert out.stats["depth"] == pytest.approx((exit + 1).double().mean().item() / 3)
    halts = exit.clamp(max=1) + 1  # halting heads after layers 0..min(exit, 1)
    flops = model.head_flops(exit)
    assert torch.equal(flops, halts.double() * 2 * 32 + 2 * 32 * 64)
    model.set_threshold(1.0)
    assert torch.equal(model.head_flops(exit), torch.full_like(flops, 2 * 32 * 64))  # no halting head runs


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_decoding_with_exits_equals_the_full_forward(ids, n_kv_head):
    cfg = DuoConfig(**{**DEEP, "n_layer": 4, "n_kv_head": n_kv_head})
    model = spread(halting(cfg, threshold=0.7))
    full = model(ids)
    assert 0 < full.stats["exited"] < 1
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(3, 8)]
    steps.append(model(ids[:, 8:], cache=cache))
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([s.flops for s in steps], 1), full.flops)


def test_threshold_one_is_the_dense_model(cfg, ids):
    model = halting(cfg, threshold=1.0)
    dense = build("dense", cfg).eval()
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("halt.")}
    dense.load_state_dict(weights)  # the same weights but the halting heads
    a, b = model(ids[:, :-1], targets=ids[:, 1:]), dense(ids[:, :-1], targets=ids[:, 1:])
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
    assert torch.equal(a.flops, b.flops)  # no halting head runs: the dense count exactly
    assert a.stats == {"depth": 1.0, "exited": 0.0}


def test_the_halting_distribution_and_its_prior_by_hand():
    z = torch.tensor([0.3, -1.2])  # L = 3
    l0, l1 = torch.sigmoid(z).tolist()
    p = halting_log_probs(z).exp()
    assert p.tolist() == pytest.approx([l0, (1 - l0) * l1, (1 - l0) * (1 - l1)])
    assert p.sum().item() == pytest.approx(1.0)
    model = halting(DuoConfig(**DEEP), prior=0.2)
    assert model.log_prior.exp().tolist() == pytest.approx([0.2, 0.8 * 0.2, 0.8**2])  # truncated geometric


def test_the_expected_loss_and_the_kl_by_hand(ids):
    cfg = DuoConfig(**DEEP)
    model = halting(cfg, beta=0.5, prior=0.3).train()
    x, y = ids[:, :-1], ids[:, 1:].clone()
    y[0, :4] = -1  # ignored targets leave the expected loss
    out = model(x, targets=y)
    T = x.shape[1]
    h, ce, lams = model.embed(x), [], []
    for l, block in enumerate(model.blocks):
        h = block(h, model.rope_cos[:T], model.rope_sin[:T])
        ce.append(F.cross_entropy(head(model, h).transpose(1, 2), y, ignore_index=-1, reduction="none"))  # (B, T)
        if l < 2:
            lams.append(lam(model, l, h))
    l0, l1 = lams
    p = [l0, (1 - l0) * l1, (1 - l0) * (1 - l1)]  # (B, T) each
    has = y != -1
    expected = sum(pl * c for pl, c in zip(p, ce, strict=True))[has].mean()
    torch.testing.assert_close(out.loss, expected)
    g = [0.3, 0.7 * 0.3, 0.7**2]
    kl = sum(pl * (pl.log() - math.log(gl)) for pl, gl in zip(p, g, strict=True)).mean()  # over every token
    torch.testing.assert_close(out.aux, 0.5 * kl)
    assert out.stats["loss_last"] == pytest.approx(ce[2][has].mean().item(), rel=1e-5)
    assert out.stats["depth"] == pytest.approx(((p[0] + 2 * p[1] + 3 * p[2]) / 3).mean().item(), rel=1e-5)
    layer = 2 * 32 * (2 * 32 + 2 * 16) + 4 * 32 + 6 * 32 * 64  # position 0; kv width 16 (2 of 4 heads)
    assert out.flops[0, 0].item() == 3 * layer + 2 * 2 * 32 + 3 * 2 * 32 * 64  # every layer, halting head and head


def test_options_are_checked_json_able_and_kept(cfg, ids, tmp_path):
    bad = (
        ({"threshold": -0.1}, "threshold"),
        ({"beta": -1}, "beta"),
        ({"prior": 0.0}, "prior"),
        ({"prior": 1.0}, "prior"),
        ({"budget": -0.5}, "budget"),
    )
    for options, match in bad:
        with pytest.raises(DuoError, match=match):
            build("halting", cfg, **options)
    model = halting(cfg, beta=0.1, prior=0.25)
    assert Halting.eval_options == ("threshold", "budget")
    expected = {"threshold": 0.5, "beta": 0.1, "prior": 0.25, "budget": 0.0}
    assert json.loads(json.dumps(model.options)) == expected
    model.set_threshold(0.4)
    save_entrant(model, tmp_path / "m")
    back = load_entrant(tmp_path / "m").eval()
    assert back.options == {**expected, "threshold": 0.4} and back.threshold == 0.4
    a, b = model(ids), back(ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.flops, b.flops)


def test_calibrate_meets_the_budget(cfg, ids):
    model = halting(cfg)
    assert model.calibrate(ids) is None and model.threshold == 0.5 and model.budget is None
    model = halting(cfg, budget=0.8)
    reached = model.calibrate(ids)
    assert abs(reached - 0.8) < 0.02 and model.realised_share(ids) == reached
    assert model.options["threshold"] == model.threshold

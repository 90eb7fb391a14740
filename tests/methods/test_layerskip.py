"""The `layerskip` entrant and the early-exit machinery (duollm/methods/layerskip.py, methods/exits.py): hand-counted
FLOPs with exits, KV completion from the frozen state, threshold 1 as the dense model, the training losses by hand,
options and calibration. Run: pytest tests/methods/test_layerskip.py"""

import json

import pytest
import torch
import torch.nn.functional as F

from duollm.errors import DuoError
from duollm.methods import build, greedy, load_entrant, save_entrant
from duollm.methods.layerskip import LayerSkip
from duollm.model.transformer import DuoConfig, apply_rope


def layerskip(cfg, **options) -> LayerSkip:
    torch.manual_seed(0)
    return build("layerskip", cfg, **options).eval()


def head(model, x):
    return F.linear(model.norm(x), model.embed.weight)  # (B, T, V)


def confidence_after_layer_0(model, ids):
    """The head's largest probability (B, T) on the state after the first layer, by hand."""
    T = ids.shape[1]
    x0 = model.blocks[0](model.embed(ids), model.rope_cos[:T], model.rope_sin[:T])  # (B, T, C)
    return head(model, x0).softmax(-1).amax(-1)


def test_flops_against_a_hand_count(cfg, ids):
    # cfg: L=2, d=32, 4 heads (kv 4, head size 8), d_big=128, V=64; the head is checked after layer 0 only
    model = layerskip(cfg)
    conf = confidence_after_layer_0(model, ids)
    model.set_threshold(conf.median().item())
    exited = conf >= model.threshold  # (B, T)
    assert 0 < exited.float().mean() < 1  # a mix: some tokens exit after layer 0, the others run layer 1
    out = model(ids)
    assert out.stats["exited"] == pytest.approx(exited.float().mean().item())
    d, V, B, T = 32, 64, *ids.shape
    for b in range(B):
        for p in range(T):
            layer = 2 * d * (4 * d) + 4 * d * (p + 1) + 6 * d * 128  # q, k, v, o; scores over p + 1 keys; BIG's FFN
            if exited[b, p]:  # layer 0, then layer 1's key and value only; the check's logits are its output
                expected = layer + 2 * d * (2 * 4 * 8) + 2 * d * V
            else:  # both layers; the check after layer 0, then the head
                expected = 2 * layer + 2 * (2 * d * V)
            assert out.flops[b, p].item() == expected


def test_checked_layers_and_head_counts_on_four_layers(ids):
    cfg = DuoConfig(n_layer=4, n_head=4, n_kv_head=2, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)
    assert layerskip(cfg).checked() == (0, 1, 2) and layerskip(cfg, min_layer=1, check_every=2).checked() == (1,)
    assert layerskip(cfg, threshold=1.0).checked() == ()
    model = layerskip(cfg, check_every=2)  # checks after layers 0 and 2
    assert model.checked() == (0, 2)
    head = 2 * 32 * 64
    exit = torch.tensor([[0, 2, 3]])  # exits at the first check, at the second, never
    assert model.head_flops(exit).tolist() == [[head, 2 * head, 3 * head]]
    model.set_threshold(0.0)  # every token exits at the first check, after layer 0
    out = model(ids)
    p = torch.arange(ids.shape[1], dtype=torch.float64)
    layer0 = 2 * 32 * (2 * 32 + 2 * 16) + 4 * 32 * (p + 1) + 6 * 32 * 64  # kv width 16 (2 of 4 heads)
    assert torch.equal(out.flops, (layer0 + 3 * 2 * 32 * (2 * 16) + head).expand_as(out.flops))
    assert out.stats == {"depth": 0.25, "exited": 1.0}


def test_threshold_one_is_the_dense_model(cfg, ids):
    model = layerskip(cfg, threshold=1.0)
    dense = build("dense", cfg).eval()
    dense.load_state_dict(model.state_dict())  # the same weights: layerskip adds none
    a, b = model(ids[:, :-1], targets=ids[:, 1:]), dense(ids[:, :-1], targets=ids[:, 1:])
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
    assert torch.equal(a.flops, b.flops)  # no head checks: the dense count exactly
    assert a.stats == {"depth": 1.0, "exited": 0.0}


def test_an_exited_token_is_frozen_and_its_later_keys_come_from_the_frozen_state(cfg, ids):
    model = layerskip(cfg, threshold=0.0)  # every token exits after layer 0
    B, T = ids.shape
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    x0 = model.blocks[0](model.embed(ids), cos, sin)  # (B, T, C) the frozen state
    cache = model.new_cache(B, T)
    out = model(ids, cache=cache)
    torch.testing.assert_close(out.logits, head(model, x0))  # the state after layer 0, through the shared head
    block = model.blocks[1]
    u = block.attn_norm(x0)  # (B, T, C)
    k = block.attn.k(u).view(B, T, 4, 8).transpose(1, 2)  # (B, nkv, T, hs)
    v = block.attn.v(u).view(B, T, 4, 8).transpose(1, 2)
    torch.testing.assert_close(cache.k[1], apply_rope(k, cos, sin))  # layer 1's keys: the frozen state's, RoPE on them
    torch.testing.assert_close(cache.v[1], v)


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_decoding_with_exits_equals_the_full_forward(ids, n_kv_head):
    cfg = DuoConfig(n_layer=4, n_head=4, n_kv_head=n_kv_head, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)
    model = layerskip(cfg)
    model.set_threshold(confidence_after_layer_0(model, ids).median().item())
    full = model(ids)
    assert 0 < full.stats["exited"] < 1  # exited tokens' completed keys and values are read by later ones
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(3, 8)]
    steps.append(model(ids[:, 8:], cache=cache))  # a chunk after single tokens
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([s.flops for s in steps], 1), full.flops)
    out = greedy(model, ids[:, :4], 8)
    for t in range(4, 12):
        assert torch.equal(out[:, t], model(out[:, :t]).logits[:, -1].argmax(-1))


def test_the_training_losses_by_hand(ids):
    cfg = DuoConfig(n_layer=4, n_head=4, n_kv_head=4, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)
    model = layerskip(cfg, p_max=0.0, exit_weight=0.5).train()  # no layer dropout
    x, y = ids[:, :-1], ids[:, 1:]
    out = model(x, targets=y)
    T = x.shape[1]
    h, losses = model.embed(x), []
    for block in model.blocks:
        h = block(h, model.rope_cos[:T], model.rope_sin[:T])
        losses.append(F.cross_entropy(head(model, h).flatten(0, 1), y.flatten()))
    torch.testing.assert_close(out.loss, losses[-1])  # the last layer's next-token loss
    exit_loss = 0.5 * (1 * losses[0] + 2 * losses[1] + 3 * losses[2]) / 6  # e_l = (l + 1) / (1 + 2 + 3)
    torch.testing.assert_close(out.aux, exit_loss)
    assert out.flops[0, 0].item() == 4 * (2 * 32 * 128 + 4 * 32 + 6 * 32 * 64) + 4 * 2 * 32 * 64  # every layer and head


def test_layer_dropout_rises_with_depth(cfg, ids):
    deep = DuoConfig(n_layer=4, n_head=4, n_kv_head=4, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)
    assert layerskip(deep, p_max=0.3).drop_rate.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    model = layerskip(cfg, p_max=1.0).train()  # L=2: layer 0 never dropped, layer 1 always, for every sequence
    x, y = ids[:, :-1], ids[:, 1:]
    out = model(x, targets=y)
    x0 = model.blocks[0](model.embed(x), model.rope_cos[:15], model.rope_sin[:15])
    torch.testing.assert_close(out.loss, F.cross_entropy(head(model, x0).flatten(0, 1), y.flatten()))
    assert out.stats["dropped"] == 0.5
    p = torch.arange(15, dtype=torch.float64)
    layer0 = 2 * 32 * 128 + 4 * 32 * (p + 1) + 6 * 32 * 128  # a dropped layer computes nothing
    assert torch.equal(out.flops, (layer0 + 2 * 2 * 32 * 64).expand_as(out.flops))
    with pytest.raises(DuoError, match="no cache"):
        model(x, cache=model.new_cache(3, 16))


def test_options_are_checked_json_able_and_kept(cfg, ids, tmp_path):
    bad = (
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"min_layer": 1}, "min_layer"),  # L=2: only layer 0 lies below the last
        ({"check_every": 0}, "check_every"),
        ({"p_max": -0.1}, "p_max"),
        ({"exit_weight": -1}, "exit_weight"),
        ({"budget": 2}, "budget"),
    )
    for options, match in bad:
        with pytest.raises(DuoError, match=match):
            build("layerskip", cfg, **options)
    with pytest.raises(DuoError, match="2 layers"):
        build("layerskip", DuoConfig(n_layer=1))
    model = layerskip(cfg, min_layer=0, check_every=2, p_max=0.2)
    assert LayerSkip.eval_options == ("threshold", "budget", "min_layer", "check_every")
    expected = {"threshold": 0.9, "min_layer": 0, "check_every": 2, "p_max": 0.2, "exit_weight": 1.0, "budget": 0.0}
    assert json.loads(json.dumps(model.options)) == expected
    model.set_threshold(0.05)
    save_entrant(model, tmp_path / "m")
    back = load_entrant(tmp_path / "m").eval()
    assert back.options == {**expected, "threshold": 0.05} and back.threshold == 0.05
    a, b = model(ids), back(ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.flops, b.flops)


def test_calibrate_meets_the_budget(cfg, ids):
    model = layerskip(cfg)
    assert model.calibrate(ids) is None and model.threshold == 0.9 and model.budget is None  # no budget: nothing
    model = layerskip(cfg, budget=0.6)
    assert model.realised_share(ids) > 1  # nothing exits at 0.9 untrained, and the checks cost on top
    reached = model.calibrate(ids)
    assert abs(reached - 0.6) < 0.02 and model.realised_share(ids) == reached
    assert 0 < model.threshold < 1 and model.options["threshold"] == model.threshold

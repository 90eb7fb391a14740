"""The `dense` entrant (duollm/methods/dense.py): hand-counted FLOPs, the width of equal FLOPs, options.
Run: pytest tests/methods/test_dense.py"""

import pytest
import torch

from duollm.errors import DuoError
from duollm.methods import build
from duollm.methods.dense import DenseLM, attention_flops, width_for_budget


def test_flops_against_a_hand_count(cfg):
    # cfg: L=2, d=32, 4 heads (kv 4), d_big=128, V=64
    model = build("dense", cfg, d_ff=48).eval()
    flops = model(torch.zeros(1, 3, dtype=torch.long)).flops  # positions 0, 1, 2
    d, V = 32, 64
    for p in range(3):
        attn = 2 * d * (4 * d) + 4 * d * (p + 1)  # q, k, v, o; scores and weighted sum over p + 1 keys
        assert flops[0, p].item() == 2 * (attn + 6 * d * 48) + 2 * d * V
    assert flops.dtype == torch.float64


def test_the_mean_over_a_window_is_the_cost_tables_all_big(cfg, ids):
    model = build("dense", cfg).eval()  # d_ff = d_big
    table = cfg.cost(ids.shape[1])
    assert model(ids).flops.mean().item() == pytest.approx(float(table.attn.sum() + table.ffn[:, 2].sum() + table.head))
    assert attention_flops(cfg, torch.arange(ids.shape[1])).mean().item() == pytest.approx(float(table.attn.sum()))


def test_the_width_of_equal_flops(cfg):
    assert width_for_budget(cfg, 0.5) == 64 and width_for_budget(cfg, 0.33) == 42 and width_for_budget(cfg, 1.0) == 128
    half = build("dense", cfg, budget=0.5)
    assert half.d_ff == 64 and half.blocks[0].ffn.up.weight.shape == (64, cfg.d_model)
    ffn = half.table().ffn[:, 2].sum()  # the dense model's FFN FLOPs: half of BIG's
    assert float(ffn) == pytest.approx(0.5 * float(cfg.cost().ffn[:, 2].sum()))


def test_options_are_checked_and_json_able(cfg):
    with pytest.raises(DuoError, match="not both"):
        build("dense", cfg, d_ff=32, budget=0.5)
    with pytest.raises(DuoError, match="budget"):
        build("dense", cfg, budget=1.5)
    with pytest.raises(DuoError, match="d_ff"):
        DenseLM(cfg, d_ff=-1)
    assert build("dense", cfg, budget=0.33).options == {"d_ff": 0, "budget": 0.33, "skipllm": 0.0}
    with pytest.raises(DuoError, match="skipllm"):
        build("dense", cfg, skipllm=-0.5)


def test_ffn_skipllm_skips_saturated_ffns_and_counts_only_those_that_ran(cfg):
    # 6 layers: the first 2 and last 2 never skip; with a threshold no cosine can miss (-1), every token past the
    # 8 warm-up positions has saturated after layers 0 and 1 and skips the FFNs of layers 2 and 3
    six = type(cfg)(**{**cfg.__dict__, "n_layer": 6})
    torch.manual_seed(0)
    model = build("dense", six, skipllm=0.5).eval()
    model.skipllm = -1.0  # below any cosine (the option itself takes thresholds >= 0)
    dense = build("dense", six)
    dense.load_state_dict(model.state_dict())
    dense.eval()
    ids = torch.randint(0, six.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    out = model(ids)
    ffn = 6 * six.d_model * six.d_big
    skipped = torch.tensor([0.0] * 8 + [2.0] * 4, dtype=torch.float64)  # (T,) FFNs skipped per position
    torch.testing.assert_close(out.flops, dense(ids).flops - ffn * skipped)
    # the same forward by hand: the blocks with the FFN of layers 2 and 3 left out past position 7
    cos, sin = model.rope_cos[:12], model.rope_sin[:12]
    x = model.embed(ids)
    for l, block in enumerate(model.blocks):
        a = x + block.attn(block.attn_norm(x), cos, sin)
        f = block.ffn(block.ffn_norm(a))
        if l in (2, 3):
            f = f * (torch.arange(12) < 8)[None, :, None]
        x = a + f
    torch.testing.assert_close(out.logits, model(ids).logits)
    torch.testing.assert_close(out.logits, torch.nn.functional.linear(model.norm(x), model.embed.weight))
    # a threshold above 1 never skips: the dense model exactly; in training the option does nothing
    never = build("dense", six, skipllm=1.5).eval()
    never.load_state_dict(model.state_dict())
    assert torch.equal(never(ids).logits, dense(ids).logits) and torch.equal(never(ids).flops, dense(ids).flops)
    assert torch.equal(model.train()(ids).logits, dense.train()(ids).logits)


def test_ffn_skipllm_decodes_as_in_one_forward(cfg):
    six = type(cfg)(**{**cfg.__dict__, "n_layer": 6})
    torch.manual_seed(0)
    model = build("dense", six, skipllm=0.2).eval()
    ids = torch.randint(0, six.vocab_size, (2, 14), generator=torch.Generator().manual_seed(4))
    full = model(ids)
    assert 0 < full.stats["ffn_skipped"] < 1  # some FFNs skipped, not all: the threshold decides per token
    cache = model.new_cache(2, 14)
    steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(3, 14)]
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([s.flops for s in steps], 1), full.flops)

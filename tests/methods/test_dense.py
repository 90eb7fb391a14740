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
    assert build("dense", cfg, budget=0.33).options == {"d_ff": 0, "budget": 0.33}

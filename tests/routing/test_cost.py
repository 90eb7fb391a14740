"""The FLOP table against hand counts. Run: pytest tests/routing/test_cost.py"""

import pytest
import torch

from duollm.presets import model_config
from duollm.routing.cost import cost_table, dense_cost, head_check_cost, route_cost


def test_hand_count_tiny():
    # d=4, big 8, small 2, vocab 10, T=3, 2 heads with 1 kv head: d_kv = 2
    t = cost_table(n_layer=2, d_model=4, d_big=8, d_small=2, vocab_size=10, seq_len=3, n_head=2, n_kv_head=1)
    proj = 2 * (4 * 4 + 4 * 2 + 4 * 2 + 4 * 4)  # q, k, v, o
    scores = 2 * 2 * 4 * 2  # QK and AV, 2 FLOPs per MAC, d=4, mean causal context (3+1)/2 = 2
    assert t.attn.tolist() == [proj + scores] * 2
    assert t.ffn[0].tolist() == [0, 2 * 3 * 4 * 2, 2 * 3 * 4 * 8]
    assert t.head == 2 * 4 * 10
    r = torch.tensor([2, 0], dtype=torch.uint8)
    assert float(route_cost(r, t)) == 2 * (proj + scores) + 2 * 3 * 4 * 8 + 0 + 2 * 4 * 10


def test_paper_numbers():
    c = model_config("paper-1.4b").cost(2048)
    assert c.ffn[0, 2] == 157_286_400  # 6·2560·10240: "≈ 157.3 MFLOP"
    assert c.ffn[0, 1] == 9_830_400  # 16× smaller
    assert c.attn[0] - 2 * 2560 * 2049 == 52_428_800  # projections: "≈ 52.4 MFLOP per layer"


def test_skip_costs_nothing_and_cost_adds_over_layers():
    t = model_config("gpt2-124m").cost(256)
    base = float(route_cost(torch.zeros(12, dtype=torch.uint8), t))
    assert base == pytest.approx(float(t.attn.sum()) + t.head)
    r = torch.randint(0, 3, (5, 7, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    per_layer = sum(t.ffn[l, r[..., l].long()] for l in range(12))
    assert torch.allclose(route_cost(r, t), per_layer + base)
    assert route_cost(r, t).shape == (5, 7)
    assert dense_cost(t) == pytest.approx(base + 12 * float(t.ffn[0, 2]))


def test_head_checks_cost_the_head_each():
    # d=4, vocab 10: one evaluation of the output head is 2·4·10 = 80 FLOPs, the head's entry of the table
    t = cost_table(n_layer=2, d_model=4, d_big=8, d_small=2, vocab_size=10, seq_len=3)
    checks = torch.tensor([[0, 1], [3, 2]])
    assert head_check_cost(checks, t).tolist() == [[0.0, 80.0], [240.0, 160.0]]
    assert head_check_cost(checks, t).dtype == torch.float64

"""The `acm` entrant (duollm/methods/acm.py): hand-counted FLOPs, nested learners, the budget, and the entrant rules.
Run: pytest tests/methods/test_acm.py"""

import pytest
import torch
from torch import nn

from duollm.errors import DuoError
from duollm.methods import build, greedy, load_entrant, save_entrant
from duollm.methods.acm import ACM
from duollm.model.ffn import SwiGLU


def acm(cfg, **options) -> ACM:
    torch.manual_seed(0)
    return ACM(cfg, **options).eval()


def spread_gates(model: ACM, scale: float = 1.0) -> None:
    """Gate weights large enough that tokens disagree on n (the init makes every logit nearly 0)."""
    with torch.no_grad():
        for block in model.blocks:
            block.ffn.gate.weight.normal_(0, scale)


def test_flops_against_a_hand_count(cfg):
    # cfg: L=2, d=32, 4 heads (kv 4), d_big=128, V=64; N=4 learners of width 32
    model = acm(cfg, learners=4)
    counts = torch.tensor([[[0, 4], [1, 2], [3, 3]]], dtype=torch.uint8)  # (1, 3, 2): positions 0, 1, 2
    flops = model.token_flops(counts, pos=5)  # positions 5, 6, 7
    d, V = 32, 64
    proj = 2 * d * (4 * d)  # q, k, v, o: d×d each
    learner = 6 * d * 32  # gate, up, down of a width-32 SwiGLU
    gate = 2 * d * 5  # d → N+1 = 5 logits
    for t, (p, n) in enumerate(zip((5, 6, 7), (4, 3, 6), strict=True)):
        attn = proj + 4 * d * (p + 1)  # scores and weighted sum over p + 1 keys
        assert flops[0, t].item() == 2 * attn + n * learner + 2 * gate + 2 * d * V
    assert flops.dtype == torch.float64


def test_the_mean_attention_count_is_the_cost_tables(cfg, ids):
    model = acm(cfg, learners=4)
    T = ids.shape[1]
    counts = torch.full((*ids.shape, cfg.n_layer), 4, dtype=torch.uint8)
    table = cfg.cost(T)
    all_big = table.attn.sum() + table.ffn[:, 2].sum() + table.head
    gate = 2 * cfg.d_model * 5 * cfg.n_layer
    assert model.token_flops(counts).mean().item() == pytest.approx(all_big.item() + gate)


def test_forward_flops_and_stats_follow_the_decisions(cfg, ids):
    model = acm(cfg, learners=4)
    spread_gates(model)
    out = model(ids)
    counts = model.trunk(ids).counts  # (B, T, L)
    assert torch.equal(out.flops, model.token_flops(counts))
    assert out.stats["learners"] == pytest.approx(counts.double().mean().item() / 4)
    assert out.stats["skip"] == pytest.approx((counts == 0).double().mean().item())
    assert out.stats["ffn"] == pytest.approx(out.stats["learners"] + 5 / (3 * 128))  # the gates' share: (N+1) / (3 d_big)
    assert 0 < out.stats["skip"] < 1 and len(counts.unique()) > 2  # the spread gates make tokens disagree


def test_all_learners_equal_one_swiglu_of_the_concatenated_weights(cfg):
    model = acm(cfg, learners=4)
    ffn = model.blocks[0].ffn
    big = SwiGLU(cfg.d_model, cfg.d_big)
    with torch.no_grad():
        big.gate.weight.copy_(torch.cat([m.gate.weight for m in ffn.learners], 0))  # (d_big, d)
        big.up.weight.copy_(torch.cat([m.up.weight for m in ffn.learners], 0))  # (d_big, d)
        big.down.weight.copy_(torch.cat([m.down.weight for m in ffn.learners], 1))  # (d, d_big)
    u = torch.randn(2, 5, cfg.d_model)
    full = torch.full((2, 5), 4)
    torch.testing.assert_close(ffn.run(u, full), big(u))
    one_hot = torch.zeros(2, 5, 5)
    one_hot[..., 4] = 1
    torch.testing.assert_close(ffn.mix(u, one_hot), big(u))


def test_n_learners_is_the_sum_of_the_first_n_and_zero_is_skip(cfg):
    ffn = acm(cfg, learners=4).blocks[1].ffn
    u = torch.randn(1, 5, cfg.d_model)
    n = torch.tensor([[0, 1, 2, 3, 4]])
    out = ffn.run(u, n)
    assert torch.equal(out[0, 0], torch.zeros(cfg.d_model))
    for t in range(1, 5):
        want = sum(ffn.learners[i](u[:, t]) for i in range(t))
        torch.testing.assert_close(out[:, t], want)
    # the dense training path with hard choices gives the same outputs
    torch.testing.assert_close(ffn.mix(u, nn.functional.one_hot(n, 5).float()), out)


def test_options_are_checked_and_json_able(cfg):
    with pytest.raises(DuoError, match="learners"):
        ACM(cfg, learners=3)  # 128 does not divide by 3
    with pytest.raises(DuoError, match="budget"):
        ACM(cfg, budget=1.5)
    with pytest.raises(DuoError, match="unexpected keyword"):
        build("acm", cfg, capacity=0.5)
    with pytest.raises(DuoError, match="gates' own share"):
        ACM(cfg, budget=0.01)  # the gates alone cost (4 + 1) / (3 * 128) = 0.013 of the FFN
    model = build("acm", cfg, learners=2, budget=0.33)
    assert model.options == {"learners": 2, "budget": 0.33, "tau": 1.0, "budget_weight": 1.0, "entropy": 0.0}
    assert model.target == pytest.approx(0.33 - 3 / (3 * 128))


def test_the_aux_loss_is_the_budget_term_plus_the_entropy_term(cfg, ids):
    model = acm(cfg, learners=4, budget=0.5, entropy=0.3)
    spread_gates(model)
    out, counts = model(ids), model.trunk(ids).counts  # (B, T, L)
    budget_term = abs(counts.double().mean().item() / 4 - model.target)
    share = torch.nn.functional.one_hot(counts.long(), 5).double().mean(1)  # (B, L, 5): each sequence's choices per layer
    h = -(share * share.clamp_min(1e-12).log()).sum(-1) / torch.log(torch.tensor(5.0))  # (B, L)
    assert out.aux.item() == pytest.approx(budget_term + 0.3 * (1 - h.mean().item()), abs=1e-5)


# ----------------------------------------------------------------------------- the entrant rules (base.py)


def test_causal_under_eval(cfg, ids):
    model = acm(cfg)
    spread_gates(model)
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 7) % cfg.vocab_size
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a.logits[:, :10], b.logits[:, :10])
    assert torch.equal(a.flops[:, :10], b.flops[:, :10])
    assert torch.equal(model.trunk(ids).counts[:, :10], model.trunk(changed).counts[:, :10])


def test_decoding_equals_the_full_forward(cfg, ids):
    model = acm(cfg)
    spread_gates(model)
    full, trace = model(ids), model.trunk(ids)
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    first = model(ids[:, :5], cache=cache)  # a prompt in one forward, then one token at a time
    steps = [first] + [model(ids[:, t : t + 1], cache=cache) for t in range(5, ids.shape[1])]
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([s.flops for s in steps], 1), full.flops)
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    counts = torch.cat([model.trunk(ids[:, t : t + 1], cache).counts for t in range(ids.shape[1])], 1)
    assert torch.equal(counts, trace.counts)
    out = greedy(model, ids[:, :4], 6)
    for t in range(4, 10):  # greedy through the cache = argmax of one full forward, position by position
        assert torch.equal(out[:, t], model(out[:, :t]).logits[:, -1].argmax(-1))


def test_save_and_load_round_trip_with_the_calibration(cfg, ids, tmp_path):
    model = acm(cfg, learners=2, budget=0.33)
    spread_gates(model)
    model.offset.fill_(0.7)
    save_entrant(model, tmp_path / "acm")
    back = load_entrant(tmp_path / "acm").eval()
    assert back.options == model.options and back.offset.item() == pytest.approx(0.7)
    a, b = model(ids), back(ids)
    torch.testing.assert_close(a.logits, b.logits)
    assert torch.equal(a.flops, b.flops)


def train_steps(model: ACM, ids: torch.Tensor, steps: int, lr: float = 1e-2) -> list[float]:
    """`steps` of AdamW on loss + aux over one fixed batch; the LM losses seen."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        out = model(ids[:, :-1], targets=ids[:, 1:])
        opt.zero_grad()
        (out.loss + out.aux).backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


def test_training_reduces_the_loss(cfg, ids):
    torch.manual_seed(0)
    losses = train_steps(acm(cfg, budget=0.5), ids, 15)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5


def test_training_moves_the_learners_fraction_toward_the_budget(cfg, ids):
    model = acm(cfg, learners=4, budget=0.2, budget_weight=5.0)
    before = model.realised_fraction(ids)  # the init: every n nearly equally likely
    torch.manual_seed(0)
    train_steps(model, ids, 20)
    after = model.realised_fraction(ids)
    assert abs(after - model.target) < abs(before - model.target) - 0.1


def test_calibration_meets_the_budget(cfg):
    model = acm(cfg, learners=4, budget=0.33)
    spread_gates(model, 0.5)
    windows = torch.randint(0, cfg.vocab_size, (16, 32), generator=torch.Generator().manual_seed(2))
    reached = model.calibrate(windows)  # the FFN share: learners and gates
    assert abs(reached - 0.33) < 0.01
    assert model.realised_fraction(windows) + model.gate_share == pytest.approx(reached)
    assert not model.training

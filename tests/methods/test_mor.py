"""The `mor` entrant (duollm/methods/mor.py): hand-counted FLOPs, the plain recursive model and the dense model it
reduces to, the recursion-wise KV cache, causality, the gathered top-k path against the masked reference, the
budget and the predictor in training, calibration, options.
Run: pytest tests/methods/test_mor.py"""

import json

import pytest
import torch
import torch.nn.functional as F

from duollm.errors import DuoError
from duollm.methods import build, greedy, load_entrant, save_entrant
from duollm.methods.mor import MoR
from duollm.model.transformer import DuoConfig

ROUTED = [{"routing": "token"}, {"routing": "expert"}, {"routing": "token", "recursions": 3}, {"routing": "expert", "recursions": 3}]


def mor(cfg, **options) -> MoR:
    torch.manual_seed(0)
    return build("mor", cfg, **options).eval()


def spread_routers(model: MoR) -> None:
    """Router weights large enough that tokens disagree (the init makes every logit nearly 0)."""
    with torch.no_grad():
        for router in [model.router] if model.router is not None else model.routers:
            router.weight.normal_(0, 1.0)


def small_cfg(n_kv_head: int = 4) -> DuoConfig:
    return DuoConfig(n_layer=2, n_head=4, n_kv_head=n_kv_head, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)


@pytest.mark.parametrize("options", [{"routing": "none"}, *ROUTED])
def test_flops_against_a_hand_count(cfg, ids, options):
    # cfg: L=2, d=32, 4 heads (kv 4), d_big=128, V=64; every block of a recursion the token runs counts
    model = mor(cfg, **options)
    R = model.recursions
    run = model.trunk(ids, "causal").run  # (B, T, R) bool
    assert run[..., 0].all() and (options["routing"] == "none") == bool(run.all())  # a mix when routed
    flops = model(ids).flops
    d, V, B, T = 32, 64, *ids.shape
    for b in range(B):
        for p in range(T):
            expected = 2 * d * V  # the head
            for r in range(R):
                c = int(run[b, : p + 1, r].sum())  # keys at recursion r: the tokens up to p that ran it, p included
                block = 2 * d * (4 * d) + 4 * d * c + 6 * d * 128  # q, k, v, o; scores over c keys; BIG's FFN
                expected += 2 * block if run[b, p, r] else 0  # the L = 2 blocks, or nothing
            if options["routing"] == "token":
                expected += 2 * d * R  # the d × R router, every token
            if options["routing"] == "expert":
                expected += 2 * d * int(run[b, p, :-1].sum())  # a d × 1 score after each recursion run but the last
            assert flops[b, p].item() == expected, (b, p)


def test_routing_none_equals_a_plain_recursive_forward(cfg, ids):
    model = mor(cfg, routing="none", recursions=3)
    assert model.budget == 3.0
    T = ids.shape[1]
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    x = model.embed(ids)  # (B, T, C)
    for _ in range(3):  # the same two blocks, three times over, every token
        for block in model.blocks:
            x = x + block.attn(block.attn_norm(x), cos, sin)
            x = x + block.ffn(block.ffn_norm(x))
    out = model(ids)
    torch.testing.assert_close(out.logits, F.linear(model.norm(x), model.embed.weight), atol=1e-5, rtol=1e-5)
    dense = build("dense", cfg).eval()(ids).flops
    head = 2 * cfg.d_model * cfg.vocab_size
    assert torch.equal(out.flops, 3 * (dense - head) + head) and out.stats["recursions"] == 3.0


def test_one_recursion_equals_the_dense_model_with_the_same_weights(cfg, ids):
    model = mor(cfg, routing="none", recursions=1)
    dense = build("dense", cfg).eval()
    dense.load_state_dict({k: v for k, v in model.state_dict().items() if k != "offset"})  # the same names
    a, b = model(ids), dense(ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.flops, b.flops)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in dense.parameters())


def test_unique_parameters_are_the_dense_models_and_the_routers(cfg):
    dense = sum(p.numel() for p in build("dense", cfg).parameters())
    d = cfg.d_model
    assert sum(p.numel() for p in mor(cfg, recursions=3).parameters()) == dense + 2 * (d + 1)  # two d → 1 routers
    assert sum(p.numel() for p in mor(cfg, routing="token", recursions=3).parameters()) == dense + 3 * (d + 1)


@pytest.mark.parametrize("options", ROUTED)
@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_decoding_through_the_recursion_wise_cache_equals_the_full_forward(ids, options, n_kv_head):
    model = mor(small_cfg(n_kv_head), **options)
    spread_routers(model)
    full = model(ids)
    run = model.trunk(ids, "causal").run
    assert not run.all() and run[..., 1].any()  # some tokens stop early: their keys must stay out of later attention
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(3, 8)]
    steps.append(model(ids[:, 8:], cache=cache))  # a chunk after single tokens
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([s.flops for s in steps], 1), full.flops)
    assert torch.equal(cache.valid.permute(1, 2, 0), run)  # (B, T, R): who wrote keys at each recursion
    out = greedy(model, ids[:, :4], 8)
    for t in range(4, 12):  # greedy through the cache = the argmax of one full forward, position by position
        assert torch.equal(out[:, t], model(out[:, :t]).logits[:, -1].argmax(-1))
    # a stopped token's key really is left out: marking every slot valid changes what later tokens see
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    model(ids[:, :8], cache=cache)
    cache.valid[:] = True
    assert not torch.allclose(model(ids[:, 8:], cache=cache).logits, full.logits[:, 8:])


@pytest.mark.parametrize("routing", ["token", "expert"])
def test_causal_under_eval_with_three_recursions(ids, routing):
    model = mor(small_cfg(), routing=routing, recursions=3)
    spread_routers(model)
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 5) % 64
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a.logits[:, :10], b.logits[:, :10])
    assert torch.equal(a.flops[:, :10], b.flops[:, :10])


def test_topk_is_not_causal_and_refuses_a_cache(cfg, ids):
    model = mor(cfg, recursions=3, routing_eval="topk")
    assert not model.decodes and model.options["routing_eval"] == "topk"
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 5) % cfg.vocab_size
    assert not torch.equal(model(ids).flops[:, :10], model(changed).flops[:, :10])  # a later token moves a decision
    with pytest.raises(DuoError, match="not causal"):
        model(ids[:, :4], cache=model.new_cache(ids.shape[0], 8))
    with pytest.raises(DuoError, match="not causal"):
        greedy(model, ids[:, :4], 2)


def test_topk_takes_each_recursions_share_of_the_active_tokens(cfg, ids):
    model = mor(cfg, recursions=3, capacity=0.5, routing_eval="topk")
    run = model.trunk(ids, "topk").run  # (B, T, R)
    assert run.sum(1).tolist() == [[16, 8, 4]] * ids.shape[0]  # k = 16, 8, 4 of T = 16
    assert bool((run[..., 2] <= run[..., 1]).all())  # only tokens that ran recursion 2 run recursion 3
    assert model(ids).stats["recursions"] == 28 / 16 and model.budget == 1.75


def test_the_gathered_path_equals_the_masked_reference_forward_and_backward(ids):
    cfg = DuoConfig(n_layer=2, n_head=4, n_kv_head=2, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)
    model = mor(cfg, recursions=3, capacity=0.6).train()
    spread_routers(model)
    grads, traces = [], []
    for reference in (True, False):
        model.zero_grad()
        trace = model.trunk(ids, "topk", reference=reference)
        (trace.x.square().mean() + trace.z.sigmoid().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})  # not the head's
        traces.append(trace)
    masked, gathered = traces
    assert torch.equal(masked.run, gathered.run) and torch.equal(masked.keys, gathered.keys)
    assert not masked.run.all()
    torch.testing.assert_close(gathered.x, masked.x, atol=1e-5, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and any("routers" in n for n in grads[0])
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-4, msg=n)


def train(model: MoR, ids, steps: int = 40):
    """`steps` AdamW steps on one batch; the first and the last output."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(steps):
        out = model(ids[:, :-1], targets=ids[:, 1:])
        opt.zero_grad()
        (out.loss + out.aux).backward()
        opt.step()
        first = out if first is None else first
    return first, out


def test_the_budget_loss_brings_token_choices_depth_to_the_budget(cfg):
    ids = torch.randint(0, cfg.vocab_size, (8, 32), generator=torch.Generator().manual_seed(1))
    model = mor(cfg, routing="token", recursions=3, budget=1.5)
    first, last = train(model, ids)
    assert last.loss < first.loss - 1.0 and first.aux > 0
    assert abs(last.stats["recursions"] - 1.5) < 0.15, last.stats
    assert abs(model.eval()(ids[:, :-1]).stats["recursions"] - 1.5) < 0.15  # the same argmax rule under eval()


def test_training_teaches_the_expert_predictor_the_topk_decisions(cfg):
    ids = torch.randint(0, cfg.vocab_size, (8, 32), generator=torch.Generator().manual_seed(1))
    model = mor(cfg, capacity=0.25)
    first, last = train(model, ids)
    k = round(0.25 * 31) / 31  # top-k's share in training: 8 of 31 tokens
    assert first.stats["recursions"] == pytest.approx(1 + k) and last.loss < first.loss - 1.0
    assert last.stats["bce"] < first.stats["bce"] / 2 and last.stats["agreement"] > 0.95
    assert abs(model.eval()(ids[:, :-1]).stats["recursions"] - (1 + k)) < 0.05  # the causal predictor, alone


@pytest.mark.parametrize("options", [{"routing": "expert", "capacity": 0.25}, {"routing": "token", "budget": 1.25}])
def test_calibrate_meets_the_budget(cfg, ids, options):
    model = mor(cfg, **options)
    spread_routers(model)
    assert model.budget == 1.25 and abs(model.realised(ids) - 1.25) > 0.1  # about half continue at offset 0
    reached = model.calibrate(ids)
    assert abs(reached - 1.25) <= 1 / ids.numel() + 1e-9 and model.realised(ids) == reached
    assert model.offset.item() > 0 and not model.training
    assert mor(cfg, routing="none").calibrate(ids) == 2.0


def test_options_are_checked_json_able_and_kept(cfg, ids, tmp_path):
    bad = (
        ({"recursions": 0}, "recursions"),
        ({"routing": "oracle"}, "routing"),
        ({"routing": "token", "recursions": 1}, "recursions"),
        ({"routing": "token", "budget": 2.5}, "budget"),
        ({"routing": "expert", "budget": 1.5}, "budget"),
        ({"routing": "token", "capacity": 0.5}, "capacity"),
        ({"capacity": 0.0}, "capacity"),
        ({"aux_weight": -1.0}, "aux_weight"),
        ({"routing": "token", "routing_eval": "topk"}, "routing_eval"),
    )
    for options, match in bad:
        with pytest.raises(DuoError, match=match):
            build("mor", cfg, **options)
    model = mor(cfg, recursions=3, routing="token", budget=2.0, aux_weight=0.5)
    expected = {
        "recursions": 3,
        "routing": "token",
        "budget": 2.0,
        "capacity": None,
        "aux_weight": 0.5,
        "routing_eval": "causal",
        "layers": 0,
    }
    assert json.loads(json.dumps(model.options)) == expected
    assert model.budget == 2.0 and mor(cfg, routing="token").budget == 1.5 and mor(cfg).budget == 1.5
    spread_routers(model)
    model.calibrate(ids)
    save_entrant(model, tmp_path / "m")
    back = load_entrant(tmp_path / "m").eval()
    assert back.options == model.options and back.offset.item() == model.offset.item()
    a, b = model(ids), back(ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.flops, b.flops)


def test_a_shorter_stack_spends_its_share_of_the_backbones_flops(cfg, ids, tmp_path):
    # one block of the backbone's two, repeated: the budget is the FFN share of the backbone's dense BIG model
    torch.manual_seed(0)
    model = build("mor", cfg, layers=1, routing="none", recursions=2).eval()
    assert len(model.blocks) == 1 and model.cfg.n_layer == 2 and model.budget == 2 * 1 / 2
    dense = build("dense", cfg)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters())
    full = model(ids)
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    steps = [model(ids[:, t : t + 1], cache=cache) for t in range(ids.shape[1])]
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([s.flops for s in steps], 1), full.flops)
    save_entrant(model, tmp_path / "mor")
    back = load_entrant(tmp_path / "mor").eval()
    assert back.options["layers"] == 1 and len(back.blocks) == 1 and torch.equal(back(ids).logits, full.logits)
    with pytest.raises(DuoError, match="layers"):
        build("mor", cfg, layers=3)

"""The `mod` entrant (duollm/methods/mod.py): hand-counted FLOPs, attention over routed tokens only (against a gather
reference), the cache's validity mask, the predictor's capacity after training, options and calibration.
Run: pytest tests/methods/test_mod.py"""

import json

import pytest
import torch
import torch.nn.functional as F

from duollm.errors import DuoError
from duollm.methods import build, greedy, load_entrant, save_entrant
from duollm.methods.mod import MoD
from duollm.model.transformer import DuoConfig


def mod(cfg, **options) -> MoD:
    torch.manual_seed(0)
    return build("mod", cfg, **options).eval()


def test_flops_against_a_hand_count(cfg, ids):
    # cfg: L=2, d=32, 4 heads (kv 4), d_big=128, V=64; every=2: block 0 dense, block 1 routed
    model = mod(cfg)
    run = model.trunk(ids, "predictor").run[..., 0]  # (B, T) bool at block 1
    assert 0 < run.float().mean() < 1  # a mix of tokens that run and skip at init (sigmoid of small logits)
    flops = model(ids).flops
    d, V, B, T = 32, 64, *ids.shape
    for b in range(B):
        for p in range(T):
            dense = 2 * d * (4 * d) + 4 * d * (p + 1) + 6 * d * 128  # q, k, v, o; scores over p + 1 keys; BIG's FFN
            c = int(run[b, : p + 1].sum())  # keys at block 1: the tokens up to p that ran it, p itself included
            routed = 2 * d + (2 * d * (4 * d) + 4 * d * c + 6 * d * 128 if run[b, p] else 0)  # the router always
            assert flops[b, p].item() == dense + routed + 2 * d * V


def test_every_token_running_costs_the_dense_model_plus_the_routers(cfg, ids):
    model = mod(cfg, every=1)  # both blocks routed
    dense = build("dense", cfg).eval()(ids).flops
    model.threshold.fill_(-float("inf"))  # every token runs every block
    assert torch.equal(model(ids).flops, dense + 2 * 2 * cfg.d_model)
    model.threshold.fill_(float("inf"))  # every token skips: routers and the head only
    out = model(ids)
    assert torch.equal(out.flops, torch.full_like(dense, 2 * 2 * cfg.d_model + 2 * cfg.d_model * cfg.vocab_size))
    assert out.stats["capacity"] == 0.0
    x = model.embed(ids)  # nothing ran: the final state is the embedding
    torch.testing.assert_close(out.logits, F.linear(model.norm(x), model.embed.weight))


def gather_reference(model: MoD, ids, k: int):
    """The paper's computation for L=2, every=2, written apart: block 0 dense, then at block 1 each sequence's top-k
    tokens gathered in order, run as a short causal sequence at their own RoPE positions, scaled and scattered back."""
    B, T = ids.shape
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    x = model.blocks[0](model.embed(ids), cos, sin)  # (B, T, C)
    block = model.blocks[1]
    z = block.scores(x)  # (B, T)
    out = x.clone()
    for b in range(B):
        idx = z[b].topk(k).indices.sort().values  # (k,) chosen tokens in order
        xs = x[b, idx][None]  # (1, k, C)
        h = block.attn(block.attn_norm(xs), cos[idx], sin[idx])  # causal among the chosen tokens only
        h = h + block.ffn(block.ffn_norm(xs + h))
        out[b, idx] = (xs + torch.sigmoid(z[b, idx])[None, :, None] * h)[0]
    return F.linear(model.norm(out), model.embed.weight)  # (B, T, V)


def test_topk_equals_the_gather_reference(cfg, ids):
    model = mod(cfg, capacity=0.25, routing="topk")
    expected = gather_reference(model, ids, k=4)
    for reference in (True, False):  # the masked reference and the gathered path, each against the loop above
        x = model.trunk(ids, "topk", reference=reference).x
        torch.testing.assert_close(F.linear(model.norm(x), model.embed.weight), expected, atol=1e-5, rtol=1e-5)
    assert model(ids).stats["capacity"] == 0.25


def test_the_gathered_path_equals_the_masked_reference_forward_and_backward(ids):
    cfg = DuoConfig(n_layer=4, n_head=4, n_kv_head=2, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)
    model = mod(cfg, every=1, capacity=0.3).train()
    grads, traces = [], []
    for reference in (True, False):
        model.zero_grad()
        trace = model.trunk(ids, "topk", reference=reference)
        (trace.x.square().mean() + trace.logits.sigmoid().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})  # not the head's
        traces.append(trace)
    masked, gathered = traces
    assert torch.equal(masked.run, gathered.run) and torch.equal(masked.keys, gathered.keys)
    torch.testing.assert_close(gathered.x, masked.x, atol=1e-5, rtol=1e-5)
    assert grads[0].keys() == grads[1].keys() and any("router" in n for n in grads[0])
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-4, msg=n)


def test_the_predictors_gathered_path_equals_the_masked_reference(ids):
    # under the predictor each sequence takes its own number of tokens: padded to the largest, masked as keys
    cfg = DuoConfig(n_layer=4, n_head=4, n_kv_head=2, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)
    model = mod(cfg, every=1).eval()
    for threshold in (0.0, 0.3, 99.0):  # about half the tokens; fewer; none at all
        model.threshold.fill_(threshold)
        masked, gathered = model.trunk(ids, "predictor", reference=True), model.trunk(ids, "predictor")
        assert torch.equal(masked.run, gathered.run) and torch.equal(masked.keys, gathered.keys)
        torch.testing.assert_close(gathered.x, masked.x, atol=1e-5, rtol=1e-5)
    model.threshold.fill_(0.0)
    counts = model.trunk(ids, "predictor").run.sum(1)  # (B, R) tokens per sequence and routed block
    assert len(set(counts[:, 0].tolist())) > 1  # the sequences did choose different numbers


@pytest.mark.parametrize("options", [{"every": 1}, {"every": 2, "capacity": 0.5}])
@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_decoding_through_the_validity_mask_equals_the_full_forward(ids, options, n_kv_head):
    cfg = DuoConfig(n_layer=4, n_head=4, n_kv_head=n_kv_head, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)
    model = mod(cfg, **options)
    full = model(ids)
    assert 0 < full.stats["capacity"] < 1  # some tokens skip: their keys must stay out of later attention
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(3, 8)]
    steps.append(model(ids[:, 8:], cache=cache))  # a chunk after single tokens
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([s.flops for s in steps], 1), full.flops)
    assert torch.equal(cache.valid.permute(1, 2, 0), model.trunk(ids, "predictor").run)  # (B, T, R) who wrote keys
    # a skipped token's key really is left out: marking every slot valid changes what later tokens see
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    model(ids[:, :8], cache=cache)
    cache.valid[:] = True
    assert not torch.allclose(model(ids[:, 8:], cache=cache).logits, full.logits[:, 8:])


def test_causal_under_eval_with_several_routed_blocks(ids):
    cfg = DuoConfig(n_layer=4, n_head=4, n_kv_head=4, d_model=32, d_big=64, vocab_size=64, max_seq_len=32)
    model = mod(cfg, every=1)
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 5) % cfg.vocab_size
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a.logits[:, :10], b.logits[:, :10])
    assert torch.equal(a.flops[:, :10], b.flops[:, :10])
    model.set_routing("topk")  # the training rule is not causal: a later token moves an earlier decision
    assert not torch.equal(model(ids).flops[:, :10], model(changed).flops[:, :10])


def test_topk_refuses_a_cache(cfg, ids):
    model = mod(cfg, routing="topk")
    with pytest.raises(DuoError, match="not causal"):
        model(ids[:, :4], cache=model.new_cache(ids.shape[0], 8))
    with pytest.raises(DuoError, match="not causal"):
        greedy(model, ids[:, :4], 2)


def test_training_brings_the_predictors_capacity_to_the_target(cfg):
    ids = torch.randint(0, cfg.vocab_size, (8, 32), generator=torch.Generator().manual_seed(1))  # a fixed batch
    model = mod(cfg, capacity=0.125).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        out = model(ids[:, :-1], targets=ids[:, 1:])
        opt.zero_grad()
        (out.loss + out.aux).backward()
        opt.step()
        first = out if first is None else first
    k = round(0.125 * 31) / 31  # top-k's share in training: 4 of 31 tokens
    assert first.stats["capacity"] == pytest.approx(k) and abs(first.stats["predictor_capacity"] - k) > 0.1  # untrained
    assert out.loss < first.loss - 1.0 and out.stats["bce"] < first.stats["bce"] / 2
    assert out.stats["agreement"] > 0.95
    realised = model.eval()(ids[:, :-1]).stats["capacity"]  # the causal predictor, alone
    assert abs(realised - k) < 0.03, realised


def test_calibrate_meets_the_capacity(cfg, ids):
    model = mod(cfg, capacity=0.25)  # untrained: about half the tokens pass at threshold 0
    assert abs(model.realised_capacity(ids) - 0.25) > 0.1
    reached = model.calibrate(ids)
    assert abs(reached - 0.25) <= 1 / ids.numel() + 1e-9 and model.realised_capacity(ids) == reached
    assert model.threshold.item() > 0


def test_options_are_checked_json_able_and_kept(cfg, ids, tmp_path):
    for bad, match in (({"capacity": 0.0}, "capacity"), ({"every": 3}, "every"), ({"routing": "oracle"}, "routing")):
        with pytest.raises(DuoError, match=match):
            build("mod", cfg, **bad)
    model = mod(cfg, capacity=0.5, every=1)
    assert json.loads(json.dumps(model.options)) == {"capacity": 0.5, "every": 1, "routing": "predictor", "aux_weight": 1.0}
    assert model.routed == (0, 1) and model.budget == 0.5 and mod(cfg).budget == (1 + 0.125) / 2
    model.calibrate(ids)
    model.set_routing("topk")
    save_entrant(model, tmp_path / "m")
    back = load_entrant(tmp_path / "m").eval()
    assert back.routing == "topk" and back.threshold.item() == model.threshold.item()
    assert torch.equal(back(ids).logits, model(ids).logits)
    with pytest.raises(DuoError, match="routing"):
        model.set_routing("oracle")

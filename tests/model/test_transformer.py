"""The Duo model against an independent dense reference, and the routing invariants (docs/design.md §4).
Run: pytest tests/model/test_transformer.py"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from duollm import Choice, DuoConfig, DuoLM
from duollm.presets import PRESETS, model_config


def dense_reference(model: DuoLM, ids: torch.Tensor, ffn: list[str | None]) -> torch.Tensor:
    """A plain Llama forward written independently (explicit softmax attention, hand RoPE and RMSNorm),
    reading the Duo model's weights; `ffn[l]` names the module layer l runs ("big", "small") or None."""
    cfg = model.cfg
    B, T = ids.shape
    nh, hs = cfg.n_head, cfg.d_model // cfg.n_head
    pos = torch.arange(T, dtype=torch.float32)[:, None]
    freqs = pos / cfg.rope_theta ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)  # (T, hs/2)

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps) * w

    def rope(x):  # (B, nh, T, hs), halves rotated
        a, b = x[..., : hs // 2], x[..., hs // 2 :]
        return torch.cat([a * freqs.cos() - b * freqs.sin(), b * freqs.cos() + a * freqs.sin()], -1)

    x = model.embed.weight[ids]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for blk, which in zip(model.blocks, ffn, strict=True):
        h = rms(x, blk.attn_norm.weight)
        q, k, v = (lin.weight for lin in (blk.attn.q, blk.attn.k, blk.attn.v))
        q = rope((h @ q.T).view(B, T, nh, hs).transpose(1, 2))
        kk = rope((h @ k.T).view(B, T, cfg.n_kv_head, hs).transpose(1, 2)).repeat_interleave(nh // cfg.n_kv_head, 1)
        vv = (h @ v.T).view(B, T, cfg.n_kv_head, hs).transpose(1, 2).repeat_interleave(nh // cfg.n_kv_head, 1)
        att = torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(hs) + mask, -1)
        x = x + (att @ vv).transpose(1, 2).reshape(B, T, -1) @ blk.attn.o.weight.T
        if which is not None:
            m = getattr(blk.ffn, which)
            u = rms(x, blk.ffn_norm.weight)
            x = x + (F.silu(u @ m.gate.weight.T) * (u @ m.up.weight.T)) @ m.down.weight.T
    return rms(x, model.norm.weight) @ model.embed.weight.T


def test_all_big_equals_dense(model, ids):
    ref = dense_reference(model, ids, ["big"] * model.cfg.n_layer)
    out = model(ids).logits  # route None = all BIG
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    big = torch.full((model.cfg.n_layer,), Choice.BIG, dtype=torch.uint8)
    assert torch.allclose(model(ids, route=big).logits, ref, atol=1e-5, rtol=1e-5)


def test_an_early_exit_runs_the_first_layers_then_the_head(model, ids):
    """`depth`: the first layers only (a self-speculative draft); all of them equals no exit."""
    short = copy.copy(model)
    short.blocks = torch.nn.ModuleList(list(model.blocks)[:1])  # the same weights, one layer
    route = torch.tensor([Choice.SMALL, Choice.BIG], dtype=torch.uint8)
    assert torch.allclose(model(ids, route=route, depth=1).logits, dense_reference(short, ids, ["small"]), atol=1e-5)
    assert torch.equal(model(ids, route=route, depth=2).logits, model(ids, route=route).logits)
    assert torch.equal(model(ids, route=(1, 2), depth=1).logits, model(ids, route=route, depth=1).logits)  # the tuple path
    for bad in (0, 3, 1.5):
        with pytest.raises(ValueError, match="depth is a number of layers"):
            model(ids, route=route, depth=bad)
    with pytest.raises(ValueError, match="depth goes with a route"):
        model(ids, router=lambda layer, u: torch.full(u.shape[:2], Choice.BIG, dtype=torch.uint8), depth=1)


def test_grouped_query_attention_matches_reference(ids):
    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=2, n_head=4, n_kv_head=2, d_model=32, d_big=64, d_small=8, vocab_size=64, max_seq_len=32))
    assert torch.allclose(m(ids).logits, dense_reference(m, ids, ["big", "big"]), atol=1e-5)


def test_skip_equals_removing_the_ffn(model, ids):
    route = torch.tensor([Choice.SKIP, Choice.SMALL], dtype=torch.uint8)
    ref = dense_reference(model, ids, [None, "small"])
    assert torch.allclose(model(ids, route=route).logits, ref, atol=1e-5)


def test_per_token_route_equals_static_when_uniform(model, ids):
    B, T = ids.shape
    for static in ([2, 1], [0, 2], [1, 1]):
        r = torch.tensor(static, dtype=torch.uint8)
        per_token = r.expand(B, T, 2).contiguous()
        assert torch.allclose(model(ids, route=r).logits, model(ids, route=per_token).logits, atol=1e-6)


def test_per_token_route_matches_tokenwise_mixture(model, ids):
    """A per-token route equals, at every layer, picking each token's row from the three full outputs."""
    B, T = ids.shape
    r = torch.randint(0, 3, (B, T, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    got = model(ids, route=r).logits
    # recompute by hand: run every module on every token, then select per token
    x = model.embed(ids)
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    for l, blk in enumerate(model.blocks):
        x = x + blk.attn(blk.attn_norm(x), cos, sin)
        u = blk.ffn_norm(x)
        outs = torch.stack([torch.zeros_like(u), blk.ffn.small(u), blk.ffn.big(u)])  # (3, B, T, C)
        x = x + outs.gather(0, r[..., l].long()[None, ..., None].expand(1, B, T, u.shape[-1]))[0]
    assert torch.allclose(got, model.head(x), atol=1e-5)


def test_module_runs_only_on_its_tokens(model, ids):
    B, T = ids.shape
    r = torch.randint(0, 3, (B, T, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=n: seen.__setitem__(n, inp[0].shape[0]))
        for n, m in model.named_modules()
        if n.endswith((".small", ".big"))
    ]
    model(ids, route=r)
    for h in hooks:
        h.remove()
    for l in range(2):
        assert seen.get(f"blocks.{l}.ffn.small", 0) == int((r[..., l] == Choice.SMALL).sum())
        assert seen.get(f"blocks.{l}.ffn.big", 0) == int((r[..., l] == Choice.BIG).sum())


def test_weights_of_a_module_do_not_touch_tokens_that_skip_it(model, ids):
    B, T = ids.shape
    r = torch.randint(0, 2, (B, T, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))  # skip/small only
    r[..., 1] = torch.randint(0, 3, (B, T), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    before = model(ids, route=r).logits
    with torch.no_grad():
        model.blocks[0].ffn.big.down.weight.normal_()  # layer 0: nobody chose BIG
    assert torch.equal(model(ids, route=r).logits, before)
    u = torch.randn(B, T, model.cfg.d_model)
    with torch.no_grad():
        y0 = model.blocks[1].ffn(u, r[..., 1])
        model.blocks[1].ffn.big.down.weight.mul_(3)  # layer 1: changes exactly the rows that chose BIG there
        y = model.blocks[1].ffn(u, r[..., 1])
    chose_big = r[..., 1] == Choice.BIG
    assert torch.equal(y[~chose_big], y0[~chose_big]) and torch.allclose(y[chose_big], 3 * y0[chose_big], atol=1e-6)
    assert torch.equal(y[r[..., 1] == Choice.SKIP], torch.zeros_like(y[r[..., 1] == Choice.SKIP]))


def test_gradients_flow_only_to_chosen_modules(model, ids):
    r = torch.full((*ids.shape, 2), Choice.SMALL, dtype=torch.uint8)
    r[0, 0, 1] = Choice.BIG
    model.train()
    model(ids, route=r, targets=ids).loss.backward()
    assert model.blocks[0].ffn.big.up.weight.grad is None  # nobody used it
    assert model.blocks[1].ffn.big.up.weight.grad.abs().sum() > 0  # one token did


def test_bad_route_is_a_value_error(model, ids):
    with pytest.raises(ValueError, match="dtype"):
        model(ids, route=torch.ones(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="input is"):
        model(ids, route=torch.ones(1, 16, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_parameter_names(model):
    names = [n for n, _ in model.named_parameters()]
    assert sum(".big." in n for n in names) == 2 * 3 and sum(".small." in n for n in names) == 2 * 3
    assert not any("lm_head" in n for n in names)  # tied: the head reads embed.weight


def test_paper_model_has_1_399b_parameters_on_meta():
    with torch.device("meta"):
        m = DuoLM(model_config("paper-1.4b"))
    assert sum(p.numel() for p in m.parameters()) == 1_399_257_600
    assert sum(p.numel() for n, p in m.named_parameters() if ".big." in n) == 943_718_400
    assert sum(p.numel() for n, p in m.named_parameters() if ".small." in n) == 58_982_400


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_configs(name):
    c = model_config(name)
    assert isinstance(c, DuoConfig) and c.d_model % c.n_head == 0
    assert model_config("gpt2-124m").d_small == model_config("gpt2-124m").d_big // 16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fused_rope_equals_eager():
    from duollm.model.transformer import apply_rope, rope, rope_tables

    cos, sin = (t.cuda() for t in rope_tables(40, 16, 10000.0))
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 4, 40, 16, device="cuda", dtype=dtype).transpose(1, 2).transpose(1, 2)  # strided too
        assert torch.allclose(rope(x, cos, sin).float(), apply_rope(x, cos, sin).float(), atol=1e-6 if dtype == torch.float32 else 1e-2)


def test_left_padding_gives_each_sequence_what_it_gets_alone():
    """attention_mask: a sequence padded on the left has the logits it has alone, in one forward and through a
    KV cache fed in pieces; a mask of the wrong length is a ValueError."""
    from duollm.model.transformer import KVCache

    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=3, n_head=4, n_kv_head=2, d_model=16, d_big=64, d_small=4, vocab_size=32, max_seq_len=32)).eval()
    a, b = torch.randint(0, 32, (1, 7)), torch.randint(0, 32, (1, 4))
    batch = torch.cat([a, torch.cat([torch.zeros(1, 3, dtype=torch.long), b], 1)])
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0
    route = torch.randint(0, 3, (2, 7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = m(batch, route=route, attention_mask=mask).logits
        assert torch.allclose(out[0], m(a, route=route[:1]).logits[0], atol=1e-5)
        assert torch.allclose(out[1, 3:], m(b, route=route[1:, 3:]).logits[0], atol=1e-5)
        cache = KVCache.empty(m.cfg, 2, 7)
        parts = [m(batch[:, i:j], route=route[:, i:j], cache=cache, attention_mask=mask[:, :j]).logits for i, j in ((0, 5), (5, 6), (6, 7))]
        assert torch.allclose(torch.cat(parts, 1), out, atol=1e-5) and not torch.isnan(out).any()
        with pytest.raises(ValueError, match="attention_mask must be"):
            m(batch, attention_mask=mask[:, :5])

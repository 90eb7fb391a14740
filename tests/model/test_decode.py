"""Decoding with a KV cache equals recomputing the whole sequence, for static routes and routers.
Run: pytest tests/model/test_decode.py"""

import contextlib
import dataclasses
import warnings

import pytest
import torch

from duollm import Choice, DuoConfig, DuoLM
from duollm.model.decode import Decoder, generate, sample
from duollm.model.fuse import fuse, fused
from duollm.model.transformer import KVCache
from duollm.routers import LinearRouter
from duollm.routers.route_head import RouteRouter
from duollm.routing.budget import Budget
from duollm.routing.sample import RandomRouter


@pytest.fixture(params=[4, 2], ids=["mha", "gqa"])
def model(request):
    torch.manual_seed(0)
    return DuoLM(
        DuoConfig(n_layer=3, n_head=4, n_kv_head=request.param, d_model=16, d_big=64, d_small=4, vocab_size=32, max_seq_len=32)
    ).eval()


def prompts():
    return torch.randint(0, 32, (3, 5), generator=torch.Generator().manual_seed(1))


def linear_router():
    torch.manual_seed(2)
    r = LinearRouter(3, 16, (Choice.SKIP, Choice.SMALL, Choice.BIG))
    for lin in r.layers:
        torch.nn.init.normal_(lin.weight, std=3.0)
    return r.eval()


def route_router():
    torch.manual_seed(3)
    r = RouteRouter(Budget.exactly_big(1).routes(3), 16)
    r.weight.normal_()
    return r.eval()


@torch.no_grad()
def recompute(model, ids, n, **policy):
    """Greedy decoding without a cache: the whole sequence again at every step."""
    for _ in range(n):
        ids = torch.cat([ids, model(ids, **policy).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids, model(ids[:, :-1], **policy).route


@pytest.mark.parametrize(
    "policy",
    [{}, {"route": torch.tensor([2, 0, 1], dtype=torch.uint8)}, {"router": "linear"}, {"router": "route"}],
    ids=["all-big", "static", "linear-router", "route-router"],
)
def test_cache_equals_recompute(model, policy):
    if policy.get("router") == "linear":
        policy = {"router": linear_router()}
    elif policy.get("router") == "route":
        policy = {"router": route_router()}
    out = generate(model, prompts(), 8, **policy)
    ref_ids, ref_route = recompute(model, prompts(), 8, **policy)
    assert torch.equal(out.ids, ref_ids) and out.ids.shape == (3, 13)
    route = ref_route if ref_route.dim() == 3 else ref_route.expand(3, 12, 3)
    assert torch.equal(out.route, route)
    if "router" in policy:
        assert len(torch.unique(out.route)) > 1  # the router did route


def policy_of(name):
    return {
        "all-big": {},
        "static": {"route": torch.tensor([2, 0, 1], dtype=torch.uint8)},
        "linear-router": {"router": linear_router()},
        "route-router": {"router": route_router()},
    }[name]


@pytest.mark.parametrize("name", ["all-big", "static", "linear-router", "route-router"])
def test_decoder_equals_generate(model, name):
    """The static-shape step (device-side position, the whole cache buffer under a mask) gives the tokens and
    routes of the reference; run twice to check that a second call reuses the buffers cleanly, and with fewer
    sequences than the bucket."""
    policy = policy_of(name)
    ref = generate(model, prompts(), 8, **policy)
    dec = Decoder(model, max_batch=4, max_len=16, graphs=False, **policy)
    for _ in range(2):
        out = dec.generate(prompts(), 8)
        assert torch.equal(out.ids, ref.ids) and torch.equal(out.route, ref.route)
    assert torch.equal(dec.generate(prompts()[:1], 8).ids, ref.ids[:1])
    with pytest.raises(ValueError, match="exceed the decoder"):
        dec.generate(prompts(), 13)


def test_device_random_router_draws_its_mix(model):
    torch.manual_seed(0)
    route = (
        Decoder(model, 16, 30, router=RandomRouter((0.5, 0.3, 0.2)), graphs=False)
        .generate(torch.randint(0, 32, (16, 10), generator=torch.Generator().manual_seed(0)), 20)
        .route
    )
    frac = [float((route == c).float().mean()) for c in (Choice.BIG, Choice.SMALL, Choice.SKIP)]
    assert frac == pytest.approx([0.5, 0.3, 0.2], abs=0.03)


@pytest.mark.gpu
@pytest.mark.parametrize("fast", [False, True], ids=["eager-step", "fused-compiled"])
@pytest.mark.parametrize("kernel", ["masked", "decode"])
@pytest.mark.parametrize("name", ["all-big", "static", "linear-router"])
def test_cuda_graph_decoder_equals_eager(name, kernel, fast):
    """The recorded steps replay exactly what the same step computes unrecorded (bf16, per-token choices through
    the same routed FFN in both: masked, or the decode kernel that reads only the chosen modules; the step eager,
    or fused and compiled)."""
    if kernel == "decode":
        pytest.importorskip("triton")
    torch.manual_seed(0)
    cfg = DuoConfig(n_layer=3, n_head=4, n_kv_head=2, d_model=64, d_big=256, d_small=16, vocab_size=128, max_seq_len=64, kernel=kernel)
    m = DuoLM(cfg).cuda().to(torch.bfloat16).eval()
    policy = policy_of(name)
    if "router" in policy:
        r = LinearRouter(3, 64, (Choice.SKIP, Choice.SMALL, Choice.BIG))
        for lin in r.layers:
            torch.nn.init.normal_(lin.weight, std=3.0)
        policy = {"router": r.cuda().eval()}
    ids = torch.randint(0, 128, (5, 9), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    eager = Decoder(m, 8, 40, graphs=False, fuse=fast, compile=fast, **policy).generate(ids, 12)
    dec = Decoder(m, 8, 40, graphs=True, fuse=fast, compile=fast, **policy)
    for _ in range(2):
        out = dec.generate(ids, 12)
        assert torch.equal(out.ids, eager.ids) and torch.equal(out.route, eager.route)
    assert len(dec._graphs) == 1  # one bucket (8) recorded once


def step_logits(dec: Decoder, ids) -> list:
    """The logits of one batch-1 step of `dec` for three tokens after the prompt `ids` (1, 9): the prompt's prefill
    and the step recorded first (compiled and tuned there, where the decoder does that)."""
    dec.generate(ids, 2)
    out = []
    with torch.no_grad(), fused(dec.model, dec.one_row) if dec.fuse else contextlib.nullcontext():
        for t in (5, 77, 300):
            dec.pos.fill_(9)
            dec.tokens[0, 0] = t
            out.append(dec.step(1)[0].float().clone())
    return out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_tuned_batch_one_step_gives_the_eager_step_s_logits():
    """bf16 on a GPU, batch 1: the step compiled with coordinate-descent tuning (its matrix-vector products as
    Inductor reductions, not cuBLAS), recorded as a graph, against the same step eager, after the same prefill."""
    torch.manual_seed(0)
    cfg = DuoConfig(n_layer=3, n_head=4, n_kv_head=2, d_model=256, d_big=1024, d_small=64, vocab_size=512, max_seq_len=64)
    m = DuoLM(cfg).cuda().to(torch.bfloat16).eval()
    ids = torch.randint(0, 512, (1, 9), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    ref = step_logits(Decoder(m, 1, 40, graphs=False), ids)
    got = step_logits(Decoder(m, 1, 40, fuse=True, compile=True, tune=True), ids)
    for eager, tuned in zip(ref, got, strict=True):
        assert torch.allclose(eager, tuned, atol=5e-2, rtol=5e-2), (eager - tuned).abs().max()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("view", [False, True], ids=["small-separate", "small-view"])
def test_one_row_step_gives_the_eager_step_s_logits(view):
    """bf16 on a GPU, batch 1: every matrix product of the fused step through the one-row kernels (`one_row`),
    compiled and recorded, against the same step eager through cuBLAS (a static route with BIG, SMALL and SKIP
    layers); recorded, the one-row step replays the unrecorded one token for token, with a router's route too."""
    pytest.importorskip("triton")
    torch.manual_seed(0)
    cfg = DuoConfig(n_layer=3, n_head=4, n_kv_head=2, d_model=256, d_big=1024, d_small=64, vocab_size=512, max_seq_len=64)
    m = DuoLM(dataclasses.replace(cfg, small_view=view)).cuda().to(torch.bfloat16).eval()
    ids = torch.randint(0, 512, (1, 9), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    r = LinearRouter(3, 256, (Choice.SKIP, Choice.SMALL, Choice.BIG))
    for lin in r.layers:
        torch.nn.init.normal_(lin.weight, std=3.0)
    static = {"route": torch.tensor([2, 1, 0], dtype=torch.uint8)}
    ref = step_logits(Decoder(m, 1, 40, graphs=False, **static), ids)
    got = step_logits(Decoder(m, 1, 40, fuse=True, compile=True, one_row=True, **static), ids)
    for eager, one in zip(ref, got, strict=True):
        assert torch.allclose(eager, one, atol=5e-2, rtol=5e-2), (eager - one).abs().max()
    # a router's per-token route too (its choices would flip on rounding against cuBLAS: compared with itself)
    for policy in (static, {"router": r.cuda().eval()}):
        plain = Decoder(m, 1, 40, graphs=False, fuse=True, compile=True, one_row=True, **policy).generate(ids, 12)
        out = Decoder(m, 1, 40, fuse=True, compile=True, one_row=True, **policy).generate(ids, 12)
        assert torch.equal(out.ids, plain.ids) and torch.equal(out.route, plain.route)


def test_one_row_falls_back_off_the_gpu(model):
    """`fused(model, one_row=True)` on the CPU (no Triton path) computes what the fused step computes, and is off
    again after the `with`; a decoder refuses one_row without fuse."""
    ids = prompts()[:1]
    with torch.no_grad(), fused(model):
        ref = model(ids[:, :1]).logits
    with torch.no_grad(), fused(model, one_row=True):
        assert model.blocks[0].attn.one_row and model.one_row
        assert torch.equal(model(ids[:, :1]).logits, ref)
    assert not model.blocks[0].attn.one_row and not model.blocks[0].ffn.big.one_row
    with pytest.raises(ValueError, match="needs fuse"):
        Decoder(model, 1, 8, one_row=True)


def test_one_row_takes_only_matrices_of_at_least_one_row_min_elements(monkeypatch):
    """kernels.linear and kernels.glu send one row to the one-row ops only where the weights hold at least
    ONE_ROW_MIN elements (Triton made usable, the ops replaced by recorders); smaller ones stay with F.linear."""
    from duollm import kernels

    seen = []
    monkeypatch.setattr(kernels, "triton_usable", lambda u: True)
    monkeypatch.setattr(kernels, "_GEMV_OP", lambda x, w: seen.append(("gemv", w.numel())) or torch.nn.functional.linear(x, w))
    monkeypatch.setattr(kernels, "_GLU_OP", lambda x, wg, wu: seen.append(("glu", wg.numel())) or wg.new_zeros(1, wg.shape[0]))
    x, w = torch.randn(1, 1, 8), torch.randn(6, 8)  # linear's weight: 48 elements; glu's gate and up: 96
    for least, expect in ((0, [("gemv", 48), ("glu", 48)]), (49, [("glu", 48)]), (96, [("glu", 48)]), (97, [])):
        monkeypatch.setattr(kernels, "ONE_ROW_MIN", least)
        seen.clear()
        assert torch.allclose(kernels.linear(x, w, one_row=True), x @ w.T)
        kernels.glu(x, w, w, one_row=True)
        assert seen == expect, least
    monkeypatch.setattr(kernels, "ONE_ROW_MIN", 0)
    seen.clear()
    kernels.linear(x, w), kernels.glu(x, w, w)
    assert seen == []  # without one_row nothing goes to the ops


def test_fused_projections_equal_separate_ones(model):
    """model/fuse.py: one matmul for q/k/v and for gate/up gives the separate projections' logits; the state dict
    is unchanged (the parameters became views); after a cast the views are gone and `fuse` rebuilds them."""
    ids = prompts()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(ids).logits
        with fused(model) as built:
            got = model(ids).logits
        assert built and torch.allclose(got, ref, atol=1e-6)
        assert model.blocks[0].attn.fused is None  # off again outside the `with`
        with fused(model) as built:
            assert not built  # already fused: nothing rebuilt
        assert model.state_dict().keys() == before.keys()
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        q = model.blocks[0].attn.q.weight
        assert q.data_ptr() == model.blocks[0].attn._fused_store.data_ptr()  # stored once
        model.double()
        assert fuse(model)  # the cast gave each parameter new storage: fused again
        with fused(model):
            assert torch.allclose(model(ids).logits.float(), ref, atol=1e-5)


@pytest.mark.parametrize("name", ["static", "linear-router", "static-tuned"])
def test_fused_compiled_decoder_equals_generate(name):
    """The decoder's fast step (fused projections, torch.compile with fullgraph at static shapes; per-token choices
    masked on the CPU) gives the reference's tokens and routes, twice (the second call reuses the compiled step)."""
    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=2, n_head=2, n_kv_head=1, d_model=16, d_big=32, d_small=8, vocab_size=32, max_seq_len=32)).eval()
    if name.startswith("static"):
        policy = {"route": torch.tensor([Choice.SMALL, Choice.BIG], dtype=torch.uint8)}
    else:
        r = LinearRouter(2, 16, (Choice.SKIP, Choice.SMALL, Choice.BIG))
        for lin in r.layers:
            torch.nn.init.normal_(lin.weight, std=3.0)
        policy = {"router": r.eval()}
    ref = generate(m, prompts(), 6, **policy)
    dec = Decoder(m, 4, 12, graphs=False, fuse=True, compile=True, tune=name.endswith("tuned"), **policy)
    for _ in range(2):
        out = dec.generate(prompts(), 6)
        assert torch.equal(out.ids, ref.ids) and torch.equal(out.route, ref.route)


def test_decoder_refuses_bad_steps_and_routes(model):
    with pytest.raises(ValueError, match="static"):
        Decoder(model, 2, 16, route=torch.full((2, 3, 3), Choice.BIG, dtype=torch.uint8))
    dec = Decoder(model, 2, 16, graphs=False, step_tokens=2)
    with pytest.raises(ValueError, match="1 to 2"):
        dec.step(1, 3)


@pytest.mark.slow
def test_many_compiled_decoders_stay_compiled():
    """Every Decoder compiles the same method: a dozen decoders and step sizes stay under Dynamo's recompilation
    limit (a fullgraph compile past it would be an error)."""
    from duollm.model.speculate import SpeculativeDecoder, speculative_greedy
    from duollm.routing.route import parse_route

    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=2, n_head=2, n_kv_head=1, d_model=16, d_big=32, d_small=8, vocab_size=32, max_seq_len=48)).eval()
    ids = prompts()[:1]
    for k in (8, 5, 3):  # the verifier's last rounds take every size up to k + 1
        ref, _ = speculative_greedy(m, ids, 17, parse_route("S-"), k=k)
        seq, _ = SpeculativeDecoder(m, 24, parse_route("S-"), k=k, graphs=False, compile=True).generate(ids, 17)
        assert torch.equal(seq, ref)


def test_chunked_prefill_equals_one_forward(model):
    ids = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(4))
    route = torch.randint(0, 3, (2, 12, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    full = model(ids, route=route).logits
    cache = KVCache.empty(model.cfg, 2, 12)
    parts = [model(ids[:, a:b], route=route[:, a:b], cache=cache).logits for a, b in ((0, 5), (5, 9), (9, 10), (10, 12))]
    assert cache.pos == 12
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_sampling_is_seeded_and_top1_is_greedy(model):
    a = generate(model, prompts(), 6, temperature=1.0, gen=torch.Generator().manual_seed(0))
    b = generate(model, prompts(), 6, temperature=1.0, gen=torch.Generator().manual_seed(0))
    assert torch.equal(a.ids, b.ids)
    top1 = generate(model, prompts(), 6, temperature=0.7, top_k=1, gen=torch.Generator().manual_seed(9))
    assert torch.equal(top1.ids, generate(model, prompts(), 6).ids)
    logits = torch.tensor([[0.0, 5.0, 1.0]])
    assert int(sample(logits, 0.0, 0, None)) == 1


def test_random_router_draws_its_mix(model):
    r = RandomRouter((0.5, 0.3, 0.2), torch.Generator().manual_seed(0))
    route = generate(model, torch.randint(0, 32, (16, 10), generator=torch.Generator().manual_seed(0)), 20, router=r).route
    frac = [float((route == c).float().mean()) for c in (Choice.BIG, Choice.SMALL, Choice.SKIP)]
    assert frac == pytest.approx([0.5, 0.3, 0.2], abs=0.03)


def test_bad_lengths(model):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompts(), 0)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        generate(model, prompts(), 40)


@pytest.mark.gpu
def test_recorded_router_steps_with_the_default_kernel():
    """kernel "auto", bf16, a router: the warm-up before a capture takes the path the capture takes (the decode
    kernel where Triton serves), so nothing compiles or tunes inside the capture; replays repeat exactly."""
    torch.manual_seed(0)
    cfg = DuoConfig(n_layer=3, n_head=4, n_kv_head=2, d_model=64, d_big=256, d_small=16, vocab_size=128, max_seq_len=64)
    m = DuoLM(cfg).cuda().to(torch.bfloat16).eval()
    r = LinearRouter(3, 64, (Choice.SKIP, Choice.SMALL, Choice.BIG))
    for lin in r.layers:
        torch.nn.init.normal_(lin.weight, std=3.0)
    ids = torch.randint(0, 128, (2, 9), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    dec = Decoder(m, 2, 40, router=r.cuda().eval())
    first, again = dec.generate(ids, 12), dec.generate(ids, 12)
    assert torch.equal(first.ids, again.ids) and torch.equal(first.route, again.route)
    assert len(dec._graphs) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["all-big", "static", "linear-router"])
def test_recorded_decoding_reads_the_host_no_more_often_for_more_tokens(name):
    """Sampling, the step's input and the routes stay on the device: between graph replays nothing waits for the
    device (a copy from pageable host memory would, and leave the GPU idle while the host launches the next step).
    The synchronisations torch reports (sync debug mode) are the prefill's alone: as many for 40 tokens as for 4."""
    torch.manual_seed(0)
    cfg = DuoConfig(n_layer=3, n_head=4, n_kv_head=2, d_model=64, d_big=256, d_small=16, vocab_size=128, max_seq_len=64)
    m = DuoLM(cfg).cuda().to(torch.bfloat16).eval()
    policy = policy_of(name)
    if "router" in policy:
        policy = {"router": LinearRouter(3, 64, (Choice.SKIP, Choice.SMALL, Choice.BIG)).cuda().eval()}
    ids = torch.randint(0, 128, (2, 9), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    dec = Decoder(m, 2, 60, **policy)
    dec.generate(ids, 4)  # records the step's graph
    counts = []
    for n in (4, 40):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                dec.generate(ids, n)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in seen))
    assert counts[0] == counts[1], counts

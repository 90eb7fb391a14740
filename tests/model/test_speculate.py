"""Self-speculative greedy decoding (duollm/model/speculate.py): the output is all-BIG greedy decoding, token for
token, whatever the draft route and the number of drafts; the counts add up. Run: pytest tests/model/test_speculate.py"""

import pytest
import torch

from duollm.model.decode import generate
from duollm.model.speculate import SpeculativeDecoder, _Flops, speculative_greedy
from duollm.routing.cost import route_cost
from duollm.routing.route import parse_route


@pytest.mark.parametrize("draft", ["SS", "S-", "BS", "BB", "B. (exit)", "S. (exit)"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_the_output_is_all_big_greedy_decoding(model, draft, k):
    ids = torch.randint(0, model.cfg.vocab_size, (1, 5), generator=torch.Generator().manual_seed(7))
    plain = generate(model, ids, 20).ids  # all-BIG, greedy, a token at a time
    depth = 1 if draft.endswith("(exit)") else None  # an early-exit draft: its first layer, then the head
    seq, stats = speculative_greedy(model, ids, 20, parse_route(draft[0] + "B" if depth else draft), k=k, depth=depth)
    assert torch.equal(seq, plain)
    assert stats["accepted"] <= stats["drafted"] and stats["rounds"] >= 1
    assert stats["drafted"] - stats["accepted"] <= stats["rounds"]  # a round ends at its first rejected draft
    if draft == "BB":  # the draft is all-BIG itself: every draft is kept, k + 1 tokens a round
        assert stats["acceptance"] == 1.0 and stats["rounds"] == -(-19 // (k + 1))


def test_flops_count_the_draft_and_the_verifier(model):
    # all-BIG drafting for itself, k = 2, 4 prompt tokens, 9 new: the drafter computes positions 0..11 (its prefill
    # of 5, then rounds of 3), the verifier 0..12 (its prefill of 4, then rounds of 3); plain decoding 0..11
    cfg = model.cfg
    one, three = float(cfg.cost(1).attn.sum()), float(cfg.cost(3).attn.sum())
    big = float(route_cost(parse_route("BB"), cfg.cost(1))) - one  # FFNs and head of one token

    def c(q: int) -> float:  # one all-BIG token at position q
        return big + one + q * (three - one)

    ids = torch.randint(0, cfg.vocab_size, (1, 4), generator=torch.Generator().manual_seed(8))
    _, same = speculative_greedy(model, ids, 9, parse_route("BB"), k=2)
    plain = sum(c(q) for q in range(12))
    assert same["flops_all_big"] == pytest.approx(plain) and same["rounds"] == 3
    assert same["flops"] == pytest.approx(plain + sum(c(q) for q in range(13)))
    _, skip = speculative_greedy(model, ids, 9, parse_route("--"), k=2)  # a draft of attention and head only
    assert skip["flops"] < same["flops"]
    # an early exit after layer 0: the drafter computes layer 0 and the head only, over the same positions
    t1, t3 = cfg.cost(1), cfg.cost(3)
    first = float(t1.ffn[0, 2] + t1.head)  # layer 0's BIG and the head

    def d(q: int) -> float:  # one exit-draft token at position q
        return first + float(t1.attn[0]) + q * float(t3.attn[0] - t1.attn[0])

    count = _Flops(cfg, parse_route("BB"), depth=1)
    for q, n in ((0, 1), (7, 1), (3, 4)):
        assert count("draft", q, n) == pytest.approx(sum(d(p) for p in range(q, q + n)))
        assert count("big", q, n) == pytest.approx(sum(c(p) for p in range(q, q + n)))
    _, exit = speculative_greedy(model, ids, 9, parse_route("BB"), k=2, depth=1)
    assert exit["flops"] < same["flops"]


def test_bad_input_is_refused(model):
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="one sequence"):
        speculative_greedy(model, ids, 4, parse_route("SS"))
    with pytest.raises(ValueError, match="max_seq_len"):
        speculative_greedy(model, ids[:1], model.cfg.max_seq_len, parse_route("SS"))


@pytest.mark.parametrize("draft", ["SS", "S-", "BB", "S. (exit)"])
@pytest.mark.parametrize("k", [1, 3])
def test_the_fast_path_equals_the_reference(model, draft, k):
    """SpeculativeDecoder (static-shape steps of two Decoders, eager on the CPU) gives the reference's tokens, counts
    and FLOPs, twice in a row (the second call reuses the decoders' buffers)."""
    ids = torch.randint(0, model.cfg.vocab_size, (1, 5), generator=torch.Generator().manual_seed(7))
    depth = 1 if draft.endswith("(exit)") else None
    route = parse_route(draft[0] + "B" if depth else draft)
    ref, ref_stats = speculative_greedy(model, ids, 17, route, k=k, depth=depth)
    fast = SpeculativeDecoder(model, 24, route, k=k, graphs=False, depth=depth)
    for _ in range(2):
        seq, stats = fast.generate(ids, 17)
        assert torch.equal(seq, ref)
        assert {key: stats[key] for key in ("rounds", "drafted", "accepted")} == {
            key: ref_stats[key] for key in ("rounds", "drafted", "accepted")
        }
        assert stats["flops"] == pytest.approx(ref_stats["flops"]) and stats["flops_all_big"] == pytest.approx(ref_stats["flops_all_big"])


def test_the_fast_path_fused_and_compiled_equals_the_reference(model):
    ids = torch.randint(0, model.cfg.vocab_size, (1, 5), generator=torch.Generator().manual_seed(9))
    ref, _ = speculative_greedy(model, ids, 12, parse_route("S-"), k=3)
    seq, _ = SpeculativeDecoder(model, 24, parse_route("S-"), k=3, graphs=False, fuse=True, compile=True).generate(ids, 12)
    assert torch.equal(seq, ref)


def test_the_fast_path_refuses_bad_input(model):
    fast = SpeculativeDecoder(model, 10, parse_route("SS"), k=2, graphs=False)
    with pytest.raises(ValueError, match="one sequence"):
        fast.generate(torch.zeros(2, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="exceed"):
        fast.generate(torch.zeros(1, 3, dtype=torch.long), 8)
    with pytest.raises(ValueError, match="k must be"):
        SpeculativeDecoder(model, 10, parse_route("SS"), k=0)
    for depth in (0, 3):
        with pytest.raises(ValueError, match="depth is a number of layers"):
            SpeculativeDecoder(model, 10, parse_route("SS"), depth=depth)
        with pytest.raises(ValueError, match="depth is a number of layers"):
            speculative_greedy(model, torch.zeros(1, 3, dtype=torch.long), 4, parse_route("SS"), depth=depth)


@pytest.mark.gpu
@pytest.mark.parametrize("depth", [None, 2], ids=["route", "early-exit"])
@pytest.mark.parametrize("fast", [False, True], ids=["eager-step", "fused-compiled"])
def test_recorded_speculation_equals_unrecorded(fast, depth):
    """On a GPU in bf16: the recorded draft and check steps give the tokens and counts of the same steps unrecorded."""
    from duollm import DuoConfig, DuoLM

    torch.manual_seed(0)
    cfg = DuoConfig(n_layer=4, n_head=4, n_kv_head=2, d_model=64, d_big=256, d_small=32, vocab_size=128, max_seq_len=64)
    m = DuoLM(cfg).cuda().to(torch.bfloat16).eval()
    ids = torch.randint(0, 128, (1, 7), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    opts = {"fuse": fast, "compile": fast, "depth": depth}
    ref, ref_stats = SpeculativeDecoder(m, 48, parse_route("SS-B"), k=3, graphs=False, **opts).generate(ids, 30)
    dec = SpeculativeDecoder(m, 48, parse_route("SS-B"), k=3, graphs=True, **opts)
    for _ in range(2):
        seq, stats = dec.generate(ids, 30)
        assert torch.equal(seq, ref) and stats["accepted"] == ref_stats["accepted"]

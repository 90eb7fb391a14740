"""Self-speculative greedy decoding (duollm/model/speculate.py): the output is all-BIG greedy decoding, token for
token, whatever the draft route and the number of drafts; the counts add up. Run: pytest tests/model/test_speculate.py"""

import pytest
import torch

from duollm.model.decode import generate
from duollm.model.speculate import speculative_greedy
from duollm.routing.cost import route_cost
from duollm.routing.route import parse_route


@pytest.mark.parametrize("draft", ["SS", "S-", "BS", "BB"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_the_output_is_all_big_greedy_decoding(model, draft, k):
    ids = torch.randint(0, model.cfg.vocab_size, (1, 5), generator=torch.Generator().manual_seed(7))
    plain = generate(model, ids, 20).ids  # all-BIG, greedy, a token at a time
    seq, stats = speculative_greedy(model, ids, 20, parse_route(draft), k=k)
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


def test_bad_input_is_refused(model):
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="one sequence"):
        speculative_greedy(model, ids, 4, parse_route("SS"))
    with pytest.raises(ValueError, match="max_seq_len"):
        speculative_greedy(model, ids[:1], model.cfg.max_seq_len, parse_route("SS"))

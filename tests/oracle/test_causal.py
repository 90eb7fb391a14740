"""The causal oracle equals a slow reference that recomputes every prefix. Run: pytest tests/oracle/test_causal.py"""

import importlib

import pytest
import torch

from duollm import Choice, DuoConfig, DuoLM
from duollm.oracle import search
from duollm.oracle.causal import causal_reference, causal_search
from duollm.routing.budget import Budget, Schedule


@pytest.fixture
def model_ids():
    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=4, n_head=4, n_kv_head=2, d_model=16, d_big=64, d_small=4, vocab_size=32, max_seq_len=16)).eval()
    ids = torch.randint(0, 32, (3, 9), generator=torch.Generator().manual_seed(2))
    return m, ids


@pytest.mark.parametrize(
    "budget",
    [Budget.exactly_big(2), Budget.exactly_skip(2), Budget.counts(big=1, small=2, skip=1), Budget.free(), Schedule("big", 3, 1)],
    ids=str,
)
def test_equals_slow_reference(model_ids, budget):
    m, ids = model_ids
    res = search(m, ids, budget, mode="causal")
    loss, route = causal_reference(m, ids, budget)
    assert res.loss.shape == (3, 8) and res.route.shape == (3, 8, 4)
    assert torch.allclose(res.loss, loss, atol=1e-5)
    assert torch.equal(res.route, route)


def test_ends_and_first_position(model_ids):
    m, ids = model_ids
    small = search(m, ids, Budget.exactly_big(0), mode="causal")
    big = search(m, ids, Budget.exactly_big(4), mode="causal")
    assert torch.allclose(small.loss, search(m, ids, Budget.exactly_big(0)).loss, atol=1e-5)
    assert torch.allclose(big.loss, search(m, ids, Budget.exactly_big(4)).loss, atol=1e-5)
    assert bool((big.route == Choice.BIG).all())
    # the first token has no past: causal and shared oracles agree there
    c, s = search(m, ids, Budget.exactly_big(2), mode="causal"), search(m, ids, Budget.exactly_big(2))
    assert torch.allclose(c.loss[:, 0], s.loss[:, 0], atol=1e-5) and torch.equal(c.route[:, 0], s.route[:, 0])


def test_routes_keep_the_budget(model_ids):
    m, ids = model_ids
    res = search(m, ids, Schedule("big", 4, 0), mode="causal")
    assert (res.route == Choice.BIG).sum(-1)[0].tolist() == Schedule("big", 4, 0).counts(8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_causal_head_in_padded_chunks(monkeypatch):
    """On a GPU the leaf losses go through the compiled head in equal, padded chunks: the same losses as the
    plain head, and the causal oracle's losses still equal its reference's."""
    S = importlib.import_module("duollm.oracle.loss")  # where the head losses and HEAD_CHUNK live

    monkeypatch.setattr(S, "HEAD_CHUNK", 7 * 32)  # 7 rows per chunk: 20 rows = 3 chunks, the last one padded
    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=3, n_head=2, n_kv_head=2, d_model=16, d_big=64, d_small=4, vocab_size=32, max_seq_len=16))
    ids = torch.randint(0, 32, (3, 8), generator=torch.Generator().manual_seed(1))
    ref_loss, _ = causal_reference(m.eval(), ids, Budget.exactly_big(1))  # on the CPU
    m = m.cuda()
    x, target = torch.randn(20, 16, device="cuda"), torch.randint(0, 32, (20,), device="cuda")
    plain = torch.nn.functional.cross_entropy(m.head(x).float(), target, reduction="none")
    got = S.rows_loss(m, x, target)
    assert got.shape == (20,) and torch.allclose(got, plain, atol=1e-4), (got - plain).abs().max()
    res = causal_search(m, ids.cuda(), Budget.exactly_big(1))
    assert torch.allclose(res.loss.cpu(), ref_loss, atol=1e-4), (res.loss.cpu() - ref_loss).abs().max()

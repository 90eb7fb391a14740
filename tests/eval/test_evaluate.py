"""Policies and per-token losses. Run: pytest tests/eval/test_evaluate.py"""

import math

import numpy as np
import pytest
import torch

from duollm import Choice
from duollm.eval import parse_policy, token_losses, unigram_losses
from duollm.eval.evaluate import summarize


def test_parse_policies():
    assert parse_policy("all-big", 3).route.tolist() == [2, 2, 2]
    assert parse_policy("all-small", 3).route.tolist() == [1, 1, 1]
    assert parse_policy("B-S", 3).route.tolist() == [2, 0, 1]
    assert parse_policy("random:0.25", 3).p == (0.25, 0.75, 0.0)
    assert parse_policy("random:0.5,0.3,0.2", 3).p == (0.5, 0.3, 0.2)


@pytest.mark.parametrize(
    "text, match",
    [
        ("BBS", "has 3 layers"),
        ("random:x", "bad policy"),
        ("random:0.5,0.6,0", "sum to 1"),
        ("fastest", "unknown policy"),
        ("router:paper", "names a router of a run"),
    ],
)
def test_bad_policies(text, match):
    with pytest.raises(ValueError, match=match):
        parse_policy(text, 4 if text == "BBS" else 2)


def test_token_losses_match_forward(model, ids):
    losses, routes = token_losses(model, ids, parse_policy("all-big", 2), batch_size=2)
    assert losses.shape == (3, 15) and routes.shape == (3, 16, 2) and bool((routes == Choice.BIG).all())
    with torch.no_grad():
        ref = model(ids[:, :-1], targets=ids[:, 1:]).loss
    assert float(losses.mean()) == pytest.approx(float(ref), rel=1e-5)


def test_random_policy_is_seeded(model, ids):
    a = token_losses(model, ids, parse_policy("random:0.5", 2), seed=3)
    b = token_losses(model, ids, parse_policy("random:0.5", 2), seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(a[1].unique().tolist()) == {1, 2}


def test_unigram():
    train = np.array([0, 0, 0, 1], dtype=np.uint16)  # counts +1: 4, 2, 1 of 7
    w = torch.tensor([[2, 0, 1]])
    assert torch.allclose(unigram_losses(train, w, 3), torch.tensor([[-math.log(4 / 7), -math.log(2 / 7)]]))
    assert summarize(torch.zeros(2, 3))["ppl"] == 1.0

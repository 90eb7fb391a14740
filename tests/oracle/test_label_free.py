"""The label-free choice: the shared oracle when the label is the reference, and blind to the label otherwise.
Run: pytest tests/oracle/test_label_free.py"""

import pytest
import torch

from duollm.oracle import brute_force, label_free
from duollm.routing.budget import Budget, Schedule


def test_the_label_as_reference_gives_the_shared_oracle(deep):
    m, ids = deep
    budget = Budget.exactly_big(2)
    one_hot = torch.nn.functional.one_hot(ids[:, 1:], 32).float()
    got = label_free(m, ids, budget, reference=one_hot)
    losses, _, arg = brute_force(m, ids, budget)  # (R, B, T-1)
    assert torch.allclose(got.loss, losses.min(0).values, atol=1e-5)
    assert torch.allclose(losses.gather(0, got.pick[None]).squeeze(0), got.loss, atol=1e-6)
    assert torch.allclose(got.route_losses, losses, atol=1e-5)


def test_picks_never_read_the_label(deep):
    m, ids = deep
    budget = Budget.exactly_big(2)
    a = label_free(m, ids, budget)
    other = ids.clone()
    other[:, -1] = (other[:, -1] + 5) % 32  # the label of the last predicting position
    b = label_free(m, other, budget)
    assert torch.equal(a.pick, b.pick)  # same routes chosen ...
    assert not torch.allclose(a.loss[:, -1], b.loss[:, -1])  # ... scored on a different label
    assert torch.equal(a.loss[:, :-1], b.loss[:, :-1])
    losses = brute_force(m, ids, budget)[0]
    assert bool((a.loss >= losses.min(0).values - 1e-6).all())  # never better than the oracle


def test_a_schedule_is_refused(deep):
    m, ids = deep
    with pytest.raises(ValueError, match="Budget"):
        label_free(m, ids, Schedule("big", 3, 1))

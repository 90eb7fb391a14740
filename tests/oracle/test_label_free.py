"""The label-free choice: the shared oracle when the label is the reference, and blind to the label otherwise.
Run: pytest tests/oracle/test_label_free.py"""

import pytest
import torch

from duollm.oracle import brute_force, label_free
from duollm.oracle.groups import Groups
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


def test_groups_choose_among_the_grouped_routes(deep):
    m, ids = deep  # 4 layers: groups of 2 leave 2 units, 2 grouped routes with 2 BIG layers
    budget, groups = Budget.exactly_big(2), Groups.of(m.cfg.n_layer, 2)
    grouped = groups.routes(budget)  # (R, L)
    got = label_free(m, ids, budget, groups=groups)
    every = label_free(m, ids, budget)  # the ungrouped set holds the grouped routes
    rows = [next(i for i, r in enumerate(budget.routes(m.cfg.n_layer)) if torch.equal(r, g)) for g in grouped]
    assert got.route_losses.shape[0] == len(grouped) < every.route_losses.shape[0]
    assert torch.allclose(got.route_losses, every.route_losses[rows], atol=1e-6)
    assert int(got.pick.max()) < len(grouped)
    assert torch.equal(label_free(m, ids, budget, groups=Groups.of(m.cfg.n_layer, 1)).pick, every.pick)

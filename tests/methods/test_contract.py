"""The entrant rules of methods/base.py, checked for every method registered in METHODS at a tiny size on the CPU:
causal under eval(), decoding equals the full forward, FLOPs per token, save/load, a tiny training run.
Run: pytest tests/methods/test_contract.py"""

import pytest
import torch

from duollm.errors import DuoError
from duollm.methods import METHODS, build, greedy, load_entrant, save_entrant
from duollm.methods.base import Entrant

pytestmark = pytest.mark.parametrize("method", sorted(METHODS))


def entrant(method: str, cfg) -> Entrant:
    torch.manual_seed(0)
    return build(method, cfg).eval()


def test_causal_under_eval(method, cfg, ids):
    model = entrant(method, cfg)
    t = 9
    changed = ids.clone()
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 7) % cfg.vocab_size  # every later token differs
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a.logits[:, : t + 1], b.logits[:, : t + 1])
    assert torch.equal(a.flops[:, : t + 1], b.flops[:, : t + 1])
    assert not torch.allclose(a.logits[:, t + 1 :], b.logits[:, t + 1 :])  # the change did reach the later positions


def test_decoding_equals_the_full_forward(method, cfg, ids):
    model = entrant(method, cfg)
    full = model(ids)
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    steps = [model(ids[:, :5], cache=cache)]  # a prompt in one forward, then one token at a time
    steps += [model(ids[:, t : t + 1], cache=cache) for t in range(5, ids.shape[1])]
    torch.testing.assert_close(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([s.flops for s in steps], 1), full.flops)  # the same decisions, the same count
    out = greedy(model, ids[:, :4], 8)
    assert out.shape == (ids.shape[0], 12) and torch.equal(out[:, :4], ids[:, :4])
    for t in range(4, 12):  # greedy through the cache = the argmax of one full forward, position by position
        assert torch.equal(out[:, t], model(out[:, :t]).logits[:, -1].argmax(-1))


def test_output_shapes_and_flops(method, cfg, ids):
    model = entrant(method, cfg)
    out = model(ids[:, :-1], targets=ids[:, 1:])
    B, T = ids[:, :-1].shape
    assert out.logits.shape == (B, T, cfg.vocab_size) and out.loss.dim() == 0 and out.aux.dim() == 0
    assert out.flops.shape == (B, T) and out.flops.dtype == torch.float64
    table = cfg.cost(T)
    all_big = float(table.attn.sum() + table.ffn[:, 2].sum() + table.head)
    assert bool((out.flops > 0).all()) and bool(torch.isfinite(out.flops).all())
    assert float(out.flops.mean()) <= 2 * all_big  # the same order as the Duo model's all-BIG count, not a unit slip
    assert model(ids[:, :-1]).loss is None


def test_save_and_load_round_trip(method, cfg, ids, tmp_path):
    model = entrant(method, cfg)
    save_entrant(model, tmp_path / method)
    back = load_entrant(tmp_path / method).eval()
    assert type(back) is type(model) and back.options == model.options
    a, b = model(ids), back(ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.flops, b.flops)


def test_a_tiny_training_run_reduces_the_loss(method, cfg, ids):
    model = entrant(method, cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out = model(ids[:, :-1], targets=ids[:, 1:])
        opt.zero_grad()
        (out.loss + out.aux).backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5, losses


def test_an_unknown_method_or_option_is_a_duo_error(method, cfg):
    with pytest.raises(DuoError, match="unknown arena method"):
        build(method + "-no-such", cfg)
    with pytest.raises(DuoError, match="no_such_option"):
        build(method, cfg, no_such_option=1)

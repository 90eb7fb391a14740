"""Checkpoints: round trip, and clear errors for corrupt, truncated or mismatched files.
Run: pytest tests/runs/test_checkpoint.py"""

import pytest
import torch

from duollm import DuoConfig, DuoLM
from duollm.config import TrainConfig
from duollm.errors import DuoError
from duollm.runs import checkpoint
from duollm.train.loop import make_optimizer


def saved(tmp_path, cfg):
    torch.manual_seed(0)
    m = DuoLM(cfg)
    opt = make_optimizer(m, TrainConfig())
    m(torch.zeros(1, 4, dtype=torch.long), targets=torch.zeros(1, 4, dtype=torch.long)).loss.backward()
    opt.step()
    gen = torch.Generator().manual_seed(7)
    checkpoint.save_checkpoint(tmp_path, m, opt, gen, 5, {"x": 1})
    return m, opt, gen


def test_round_trip(tmp_path, cfg):
    m, opt, gen = saved(tmp_path, cfg)
    step, folder = checkpoint.latest(tmp_path)
    assert step == 5 and folder.name == "step-000005"
    m2 = DuoLM(cfg)
    opt2 = make_optimizer(m2, TrainConfig())
    gen2 = torch.Generator()
    assert checkpoint.load_weights(folder, m2) == {"x": 1}
    checkpoint.load_train_state(folder, m2, opt2, gen2, step)
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
        assert set(opt.state[a]) == set(opt2.state[b])  # small modules got no gradient under all-big: no state
        if opt.state[a]:
            assert torch.equal(opt.state[a]["exp_avg_sq"], opt2.state[b]["exp_avg_sq"])
    assert torch.equal(gen.get_state(), gen2.get_state())


def test_only_the_latest_step_is_kept(tmp_path, cfg):
    m, opt, gen = saved(tmp_path, cfg)
    checkpoint.save_checkpoint(tmp_path, m, opt, gen, 6, {})
    assert [p.name for p in (tmp_path / "ckpt").glob("step-*")] == ["step-000006"]


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]), "corrupt or truncated"),
        (lambda f: f.write_bytes(b"garbage"), "corrupt or truncated"),
        (lambda f: f.unlink(), "missing"),
    ],
)
def test_damaged_weights(tmp_path, cfg, damage, match):
    saved(tmp_path, cfg)
    _, folder = checkpoint.latest(tmp_path)
    damage(folder / "model.safetensors")
    with pytest.raises(DuoError, match=match):
        checkpoint.load_weights(folder, DuoLM(cfg))


def test_mismatched_model(tmp_path, cfg):
    saved(tmp_path, cfg)
    _, folder = checkpoint.latest(tmp_path)
    with pytest.raises(DuoError, match="does not match the model"):
        checkpoint.load_weights(folder, DuoLM(DuoConfig(d_model=64, d_big=128, d_small=8, vocab_size=64)))
    with pytest.raises(DuoError, match="does not match the model"):
        checkpoint.load_weights(folder, DuoLM(DuoConfig(n_layer=3, vocab_size=64)))


def test_corrupt_pointer(tmp_path, cfg):
    saved(tmp_path, cfg)
    (tmp_path / "ckpt" / "latest.json").write_text("{")
    with pytest.raises(DuoError, match="corrupt"):
        checkpoint.latest(tmp_path)

"""An untied output head (`DuoConfig.tie_embeddings=False`): its own weight, used by the head, saved and loaded
by checkpoints; tied models keep their single tensor. Run: pytest tests/model/test_untied_head.py"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from duollm import DuoLM
from duollm.config import RunConfig, from_dict, to_dict
from duollm.errors import DuoError
from duollm.runs import checkpoint


@pytest.fixture
def untied(cfg) -> DuoLM:
    torch.manual_seed(0)
    return DuoLM(dataclasses.replace(cfg, tie_embeddings=False)).eval()


def test_untied_head_has_its_own_weight_and_the_logits_use_it(untied, ids):
    assert untied.lm_head.weight.shape == (64, 32) and not torch.equal(untied.lm_head.weight, untied.embed.weight)
    assert untied.output_weight is untied.lm_head.weight
    x = torch.randn(2, 3, 32)
    assert torch.equal(untied.head(x), F.linear(untied.norm(x), untied.lm_head.weight))
    before = untied(ids).logits
    with torch.no_grad():
        untied.lm_head.weight.mul_(2)
    assert not torch.allclose(untied(ids).logits, before)


def test_tied_model_is_unchanged(model):
    assert model.cfg.tie_embeddings and model.lm_head is None and model.output_weight is model.embed.weight
    assert "lm_head.weight" not in model.state_dict()


def test_checkpoint_round_trip_keeps_the_untied_head(tmp_path, untied, ids, cfg):
    checkpoint.save_weights(tmp_path / "model.safetensors", untied)
    again = DuoLM(untied.cfg)
    checkpoint.load_weights(tmp_path, again)
    assert torch.equal(again.lm_head.weight, untied.lm_head.weight)
    assert torch.equal(again.eval()(ids).logits, untied(ids).logits)
    with pytest.raises(DuoError, match="lm_head"):  # a tied model cannot take an untied checkpoint
        checkpoint.load_weights(tmp_path, DuoLM(cfg))


def test_run_config_round_trips_the_field_and_old_configs_stay_tied():
    run = RunConfig()
    run.model = dataclasses.replace(run.model, tie_embeddings=False)
    assert from_dict(RunConfig, to_dict(run)).model.tie_embeddings is False
    old = to_dict(RunConfig())
    del old["model"]["tie_embeddings"]  # a config.json written before the field existed
    assert from_dict(RunConfig, old).model.tie_embeddings is True

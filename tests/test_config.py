"""Run configs: presets round-trip through JSON, dotted overrides are typed, unknown keys fail.
Run: pytest tests/test_config.py"""

import json

import pytest

from duollm.config import RunConfig, apply_overrides, diff, from_dict, to_dict
from duollm.errors import DuoError
from duollm.presets import PRESETS, run_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    cfg = run_config(name)
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_overrides_are_typed():
    cfg = apply_overrides(run_config("tiny"), {"model.n_layer": "8", "train.lr": "1e-3", "train.compile": "true", "train.steps": "1e3"})
    assert cfg.model.n_layer == 8 and cfg.train.lr == 1e-3 and cfg.train.compile is True and cfg.train.steps == 1000
    assert diff(run_config("tiny"), cfg)[0].startswith("model.n_layer")


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("model.n_layers", "8", "unknown config key 'model.n_layers'"),
        ("modle.n_layer", "8", "unknown config key 'modle.n_layer'"),
        ("model.n_layer", "eight", "model.n_layer must be int"),
        ("train.steps", "2.5", "train.steps must be int"),
        ("train.dtype", "fp8", "train.dtype must be one of"),
        ("model", "3", "does not name a field"),
        ("model.n_head", "5", "bad config"),
    ],
)
def test_bad_overrides_name_the_key(key, value, match):
    with pytest.raises(DuoError, match=match):
        apply_overrides(run_config("tiny"), {key: value})


def test_unknown_preset():
    with pytest.raises(DuoError, match="unknown preset 'huge'"):
        run_config("huge")

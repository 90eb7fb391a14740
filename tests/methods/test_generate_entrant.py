"""`duollm generate --run FOLDER` on an arena entrant: greedy decoding through the entrant's cache, as `greedy` gives.
Run: pytest tests/methods/test_generate_entrant.py"""

import json

import pytest
import torch

from duollm.cli import main
from duollm.data.tokenizer import load_tokenizer
from duollm.files import write_json
from duollm.methods import SOURCE_FILE, build, greedy, save_entrant
from duollm.model.transformer import DuoConfig
from duollm.presets import run_config


@pytest.mark.parametrize("method", ["dense", "mod"])
def test_generate_decodes_an_entrant_as_greedy_does(tmp_path, capsys, method):
    cfg = run_config("arena-toy")
    tok = load_tokenizer(cfg.data.tokenizer)
    torch.manual_seed(0)
    model = build(method, DuoConfig(**{**cfg.model.__dict__, "n_layer": 2})).eval()
    save_entrant(model, tmp_path)
    write_json(tmp_path / SOURCE_FILE, {"tokenizer": cfg.data.tokenizer, "preset": "arena-toy"})
    assert main(["generate", "--run", str(tmp_path), "--prompt", "In the beginning", "--max-new-tokens", "6", "--json"]) in (0, None)
    got = json.loads(capsys.readouterr().out)
    ids = torch.tensor([tok.encode_batch(["In the beginning"])[0]])
    want = greedy(model, ids, 6)[0, ids.shape[1] :].tolist()
    assert got["tokens"] == want and got["method"] == method and got["flops_per_token"] > 0


def test_an_entrant_refuses_a_policy_and_a_missing_tokenizer(tmp_path):
    cfg = run_config("arena-toy")
    save_entrant(build("dense", DuoConfig(**{**cfg.model.__dict__, "n_layer": 1})), tmp_path)
    assert main(["generate", "--run", str(tmp_path), "--prompt", "In", "--max-new-tokens", "2"]) == 2  # no source.json
    write_json(tmp_path / SOURCE_FILE, {"tokenizer": cfg.data.tokenizer})
    assert main(["generate", "--run", str(tmp_path), "--prompt", "In", "--policy", "all-small"]) == 2
    assert main(["generate", "--run", str(tmp_path), "--prompt", "In", "--speculate", "all-small"]) == 2
    assert main(["generate", "--run", str(tmp_path), "--prompt", "In", "--top-k", "5"]) == 2
    assert main(["generate", "--run", str(tmp_path), "--prompt", "In", "--max-new-tokens", "2"]) == 0

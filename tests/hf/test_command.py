"""`duollm export` / `duollm import`: a run → a Hugging Face folder (Auto classes, tokenizer) → a run again;
bad input gives exit code 2 and writes nothing. Run: pytest tests/hf/test_command.py"""

import json

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from duollm.routing.route import parse_route  # noqa: E402
from duollm.runs.load import load_run
from tests.conftest import run_cli  # noqa: E402


def test_export_import_round_trip(debug_run, tmp_path, capsys):
    hf = tmp_path / "hf"
    code, out, err = run_cli(capsys, "export", "--run", str(debug_run), "--hf", str(hf), "--policy", "BS-", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["policy"] == "BS-" and res["step"] == 3 and res["hf"] == str(hf)
    cfg, duo, tok = load_run(debug_run)
    model = AutoModelForCausalLM.from_pretrained(hf).eval()
    ids = torch.tensor(tok.encode_batch(["In the beginning was the word"]))
    assert torch.equal(model(ids).logits, duo(ids, route=parse_route("BS-")).logits)  # the folder's default policy
    hf_tok = AutoTokenizer.from_pretrained(hf)
    text = "Route each token: big, small, or skip.\n"
    assert hf_tok(text).input_ids == tok.encode_batch([text])[0] and hf_tok.eos_token_id == tok.eos_id
    assert model.config.eos_token_id == tok.eos_id and model.config.duollm_run["preset"] == "debug"

    back = tmp_path / "back"
    code, out, err = run_cli(capsys, "import", "--hf", str(hf), "--out", str(back), "--json")
    assert code == 0, err
    cfg2, duo2, tok2 = load_run(back)
    assert cfg2 == cfg and tok2.name == tok.name
    assert all(torch.equal(a, b) for a, b in zip(duo.state_dict().values(), duo2.state_dict().values(), strict=True))


def test_bad_input_exits_2_and_writes_nothing(debug_run, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        (["export", "--run", str(debug_run), "--hf", str(taken)], "already exists"),
        (["export", "--run", str(tmp_path / "norun"), "--hf", str(tmp_path / "a")], "not a run directory"),
        (["export", "--run", str(debug_run), "--hf", str(tmp_path / "b"), "--policy", "BS"], "the model has 3"),
        (["export", "--run", str(debug_run), "--hf", str(tmp_path / "c"), "--policy", "router:none"], "no router 'none'"),
        (["import", "--hf", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")], "no config.json"),
        (["import", "--hf", str(debug_run), "--out", str(tmp_path / "e")], "not a duollm one"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert (taken / "keep.txt").read_text() == "mine" and sorted(p.name for p in taken.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no target, no temporary folder left


def test_import_needs_no_transformers_and_export_names_the_extra(debug_run, tmp_path, capsys, monkeypatch):
    hf = tmp_path / "hf"
    assert run_cli(capsys, "export", "--run", str(debug_run), "--hf", str(hf), "--json")[0] == 0
    from duollm import extras

    monkeypatch.setitem(extras.EXTRAS, "hf", ("duollm_no_such_module",))  # as without transformers
    code, out, err = run_cli(capsys, "import", "--hf", str(hf), "--out", str(tmp_path / "run"), "--json")
    assert code == 0, err  # import reads the files itself
    code, out, err = run_cli(capsys, "export", "--run", str(debug_run), "--hf", str(tmp_path / "hf2"))
    assert code == 2 and "needs duollm_no_such_module: pip install 'duollm[hf]'" in err and not (tmp_path / "hf2").exists()

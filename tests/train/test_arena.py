"""The arena (duollm/train/arena.py, duollm arena): the entrant parser, equal batches, rows, resuming, the command.
Run: pytest tests/train/test_arena.py"""

import json

import pytest
import torch

import duollm.train.arena as arena
from duollm.errors import DuoError
from duollm.methods import load_entrant
from duollm.runs.load import load_run
from duollm.train.arena import ArenaSpec, parse_entrants, run_arena
from tests.conftest import run_cli

TINY = {
    **{"data.train": "synthetic", "data.tokenizer": "bytes", "model.vocab_size": "257", "model.n_layer": "2"},
    **{"model.d_model": "32", "model.d_big": "64", "model.d_small": "8", "model.max_seq_len": "32"},
    **{"train.seq_len": "16", "train.batch_size": "2", "train.warmup_steps": "1"},
}
FLAGS = ["--tokens", "96", "--eval-tokens", "256", "--calib-seqs", "2", *(f"--{k}={v}" for k, v in TINY.items())]


def test_the_entrant_parser():
    got = parse_entrants("dense,dense:budget=0.5,duo-random:budget=0.33,route=BSBS,mod:capacity=0.125,every=2,on=true")
    assert got == [
        ("dense", {}),
        ("dense", {"budget": 0.5}),
        ("duo-random", {"budget": 0.33, "route": "BSBS"}),
        ("mod", {"capacity": 0.125, "every": 2, "on": True}),
    ]
    for bad, match in [
        ("budget=0.5,dense", "before any entrant"),
        ("dense:budget", "bad option"),
        ("dense:budget=0.5,budget=0.3", "twice"),
        ("dense,,duo-random", "bad entrant"),
        ("den$e", "bad entrant"),
    ]:
        with pytest.raises(DuoError, match=match):
            parse_entrants(bad)


def test_bad_entrants_are_refused_before_any_work(tmp_path):
    for text, match in [("no-such", "unknown arena method"), ("dense:width=3", "width"), ("dense,dense", "twice")]:
        with pytest.raises(DuoError, match=match):
            run_arena(ArenaSpec(out=str(tmp_path / "a"), entrants=text, overrides=TINY))
    assert not (tmp_path / "a").exists()


def test_every_entrant_of_a_seed_trains_on_the_same_batches_and_the_arena_resumes(tmp_path, monkeypatch):
    seen = []

    def recording(tokens, batch_size, seq_len, gen):
        x = sample(tokens, batch_size, seq_len, gen)
        seen.append(x)
        return x

    sample = arena.sample_batch
    monkeypatch.setattr(arena, "sample_batch", recording)
    spec = ArenaSpec(
        out=str(tmp_path / "a"), entrants="dense,duo-random:budget=0.5", tokens=96, eval_tokens=256, calib_seqs=2, overrides=TINY
    )
    res = run_arena(spec)
    steps = 96 // (2 * 16)
    assert len(seen) == 2 * steps and all(torch.equal(a, b) for a, b in zip(seen[:steps], seen[steps:], strict=True))
    rows = [json.loads(line) for line in (tmp_path / "a" / "arena.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["dense", "duo-random:budget=0.5"] and res["rows"] == rows
    assert set(arena.ROW_KEYS) <= set(rows[0]) and rows[0]["train_tokens"] == rows[1]["train_tokens"] == 96
    dense, duo = rows
    assert dense["compute"] == 1.0 and dense["ffn_share"] == 1.0 and dense["flops_per_token"] == dense["flops_dense_big"]
    assert duo["calibrated"] is not None and len(duo["options"]["route"]) == 2  # the fixed route chosen, in the options
    assert duo["ffn_share"] == pytest.approx(duo["calibrated"], abs=1e-4) and duo["compute"] < 1
    assert set(duo["ppl"]) == {"prose-val", "code-val"} and all(v > 1 for v in duo["ppl"].values())
    assert (tmp_path / "a" / "entrants" / "duo-random_budget-0.5-seed0" / "entrant.json").is_file()
    # a second call with one more entrant trains only that one; other settings are refused
    res = run_arena(ArenaSpec(**{**spec.__dict__, "entrants": "dense,dense:budget=0.5"}))
    assert res["skipped"] == ["dense seed 0"] and [r["label"] for r in res["rows"]] == ["dense", "dense:budget=0.5"]
    with pytest.raises(DuoError, match="other settings"):
        run_arena(ArenaSpec(**{**spec.__dict__, "tokens": 128}))


def test_the_command_writes_rows_and_the_figure_and_report_draws_them(tmp_path, capsys):
    out = tmp_path / "a"
    code, stdout, err = run_cli(capsys, "arena", "--out", str(out), "--entrants", "dense,dense:budget=0.5", "--json", *FLAGS)
    assert code == 0, err
    res = json.loads(stdout)
    assert [r["label"] for r in res["rows"]] == ["dense", "dense:budget=0.5"] and (out / "arena.png").is_file()
    code, stdout, err = run_cli(capsys, "arena", "--out", str(out), "--entrants", "dense,dense:budget=0.5", *FLAGS)
    assert code == 0 and "| dense:budget=0.5 | 1 |" in stdout and "already in" in stdout
    params = {r["label"]: r["params"] for r in res["rows"]}  # the unique parameter count beside the FLOPs
    assert "parameters (M) |" in stdout and f"| {params['dense:budget=0.5'] / 1e6:.2f} |" in stdout
    assert params["dense"] > params["dense:budget=0.5"]
    assert "paired by seed" not in stdout  # two dense entrants: nothing to pair
    code, stdout, err = run_cli(capsys, "arena", "--out", str(out), "--entrants", "dense,dense:budget=0.5,dense:skipllm=0.9", *FLAGS)
    assert code == 0 and "| dense:skipllm=0.9 | 100.0% | dense |" in stdout, stdout  # a policy on dense: an entrant
    code, stdout, err = run_cli(capsys, "report", "--run", str(out))
    assert code == 0, err
    html = (out / "report" / "report.html").read_text()
    assert "<h2>Arena</h2>" in html and "dense:budget=0.5" in html and "parameters (M)" in html and (out / "report" / "arena.png").is_file()
    assert "Against the plain dense entrant" in html  # the paired table: dense:skipllm=0.9 against dense


@pytest.mark.parametrize("text", ["dense:width=3", "nothing", "dense:budget"])
def test_the_command_refuses_bad_entrants_in_one_line(tmp_path, capsys, text):
    code, out, err = run_cli(capsys, "arena", "--out", str(tmp_path / "a"), "--entrants", text, *FLAGS)
    assert code == 2 and err.count("\n") == 1 and err.startswith("duollm: error: ")
    assert not (tmp_path / "a").exists()


def test_entrants_that_differ_in_evaluation_only_train_once_and_speed_comes_after(tmp_path, monkeypatch):
    spec = ArenaSpec(
        out=str(tmp_path / "a"),
        entrants="duo-random:budget=0.5,duo-random:budget=0.3",
        tokens=96,
        eval_tokens=256,
        calib_seqs=2,
        overrides=TINY,
    )
    first, second = run_arena(spec)["rows"]
    assert "shared_training" not in first and second["shared_training"] == "duo-random:budget=0.5"
    assert second["final_loss"] == first["final_loss"] and second["options"]["budget"] == 0.3
    alone = run_arena(ArenaSpec(**{**spec.__dict__, "out": str(tmp_path / "b"), "entrants": "duo-random:budget=0.3"}))["rows"][0]
    assert alone["ppl"] == second["ppl"] and alone["final_loss"] == second["final_loss"]  # the copy is the same training
    for r in (first, second):
        assert r["ffn_share"] == pytest.approx(r["target"], abs=0.02)  # a mix of two routes meets the budget
    # the Duo model inside, as a run directory that the --run tools read: the same weights
    folder = tmp_path / "a" / "entrants" / "duo-random_budget-0.3-seed0"
    _, duo, _ = load_run(folder / "run")
    entrant = load_entrant(folder).eval()
    ids = torch.randint(0, 257, (2, 16))
    route = torch.tensor([2, 1], dtype=torch.uint8)
    torch.testing.assert_close(duo(ids, route=route).logits, entrant.duo(ids, route=route).logits)
    # --speed on rows already there: every entrant timed, nothing trained again
    rows = run_arena(ArenaSpec(**{**spec.__dict__, "speed": True}))["rows"]
    assert [r["train_seconds"] for r in rows] == [first["train_seconds"], second["train_seconds"]]
    assert all(r[k] > 0 for r in rows for k in arena.SPEED_KEYS)
    # timed again: the first pass's timings are kept, in the order the passes ran; the pass's first entrant is
    # timed twice, the first time dropped (it ran slow on the GPU)
    calls = []
    real = arena.measure_speed
    monkeypatch.setattr(arena, "measure_speed", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run_arena(ArenaSpec(**{**spec.__dict__, "speed_only": True}))["rows"]
    assert len(calls) == len(again) + 1
    for before, after in zip(rows, again, strict=True):
        assert [e["speed_pass"] for e in after["speed_earlier"]] == [before["speed_pass"]]
        assert all(after["speed_earlier"][0][k] == before[k] for k in arena.SPEED_KEYS)


def test_rows_from_processes_sharing_a_folder_are_merged(tmp_path):
    arena.put_row(tmp_path, {"label": "a", "seed": 0, "x": 1})
    arena.put_row(tmp_path, {"label": "b", "seed": 0, "x": 2})  # as another process would: the file is read again
    arena.put_row(tmp_path, {"label": "a", "seed": 0, "x": 3})  # the same entrant and seed: replaced
    assert arena.read_rows(tmp_path) == [{"label": "b", "seed": 0, "x": 2}, {"label": "a", "seed": 0, "x": 3}]


def test_first_seed_trains_the_later_seeds_alone_and_as_a_full_run_would(tmp_path):
    spec = ArenaSpec(
        out=str(tmp_path / "a"), entrants="dense:budget=0.5", tokens=64, eval_tokens=128, calib_seqs=2, seeds=2, overrides=TINY
    )
    full = run_arena(spec)["rows"]
    late = run_arena(ArenaSpec(**{**spec.__dict__, "out": str(tmp_path / "b"), "first_seed": 1}))["rows"]
    assert [r["seed"] for r in full] == [0, 1] and [r["seed"] for r in late] == [1]
    assert late[0]["ppl"] == full[1]["ppl"] and late[0]["options"] == full[1]["options"]
    with pytest.raises(DuoError, match="no seed below"):
        run_arena(ArenaSpec(**{**spec.__dict__, "out": str(tmp_path / "c"), "first_seed": 2}))
    assert not (tmp_path / "c").exists()


def test_an_arena_saved_before_a_config_field_existed_resumes_and_a_changed_value_is_refused(tmp_path):
    spec = ArenaSpec(out=str(tmp_path / "a"), entrants="dense:budget=0.5", tokens=64, eval_tokens=128, calib_seqs=2, overrides=TINY)
    run_arena(spec)
    path = tmp_path / "a" / "arena.json"
    saved = json.loads(path.read_text())
    del saved["config"]["train"]["exact_counts"]  # as written before the field was added
    path.write_text(json.dumps(saved))
    assert run_arena(spec)["skipped"] == ["dense:budget=0.5 seed 0"]
    saved["config"]["train"]["lr"] = 1.0  # a setting that differs is still refused
    path.write_text(json.dumps(saved))
    with pytest.raises(DuoError, match=r"other settings \(config\.train\.lr\)"):
        run_arena(spec)


def test_first_seed_from_the_command_into_a_folder_that_holds_the_earlier_seeds(tmp_path, capsys):
    out = tmp_path / "a"
    run_arena(ArenaSpec(out=str(out), entrants="dense:budget=0.5", tokens=96, eval_tokens=256, calib_seqs=2, overrides=TINY))
    flags = ["--out", str(out), "--entrants", "dense:budget=0.5", *FLAGS]
    code, stdout, err = run_cli(capsys, "arena", *flags, "--seeds", "2", "--first-seed", "1", "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert [r["seed"] for r in res["rows"]] == [1] and res["skipped"] == []  # seed 0 is neither trained nor reported
    assert sorted(json.loads(line)["seed"] for line in (out / "arena.jsonl").read_text().splitlines()) == [0, 1]
    code, _, err = run_cli(capsys, "arena", *flags, "--first-seed", "1")
    assert code == 2 and "no seed below" in err and err.count("\n") == 1


def test_the_table_shows_a_dash_for_rows_without_a_parameter_count():
    from duollm.cli.arena import format_table

    row = {"label": "dense", "method": "dense", "seed": 0, "ppl": {"prose-val": 30.0}, "flops_per_token": 1e6}
    row.update(compute=1.0, ffn_share=1.0, tokens_per_s=1.0, train_tokens=64, target=1.0)
    assert format_table([{**row, "params": 2_500_000}]).splitlines()[-1].endswith("| 2.50 |")
    assert format_table([row]).splitlines()[-1].endswith("| - |")

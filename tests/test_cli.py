"""The command line: smoke runs of every subcommand, and one clear line with exit code 2 for bad input.
Run: pytest tests/test_cli.py"""

import json
import subprocess
import sys

import pytest

from tests.conftest import run_cli

DEBUG = ["--preset", "debug", "--steps", "3"]


run = run_cli


@pytest.fixture
def trained(tmp_path, capsys):
    code, out, _ = run(capsys, "train", "--out", str(tmp_path / "run"), *DEBUG, "--json")
    assert code == 0
    return tmp_path / "run", json.loads(out)


def test_train_then_eval(trained, capsys):
    run_dir, res = trained
    assert set(res) >= {"steps", "final_loss", "tokens_per_s"} and res["steps"] == 3
    for policy in ("all-big", "all-small", "random:0.5", "B-"):
        code, out, err = run(capsys, "eval", "--run", str(run_dir), "--policy", policy, "--split", "synthetic-val", "--json")
        assert code == 0, err
        res = json.loads(out)
        assert set(res) >= {"policy", "split", "tokens", "loss", "ppl"} and res["policy"] == policy and res["ppl"] > 1
    assert len(list((run_dir / "evals").glob("*.safetensors"))) == 4
    code, out, _ = run(capsys, "eval", "--run", str(run_dir), "--split", "synthetic-val")
    assert code == 0 and "ppl" in out


def test_train_resume_extends(trained, capsys):
    run_dir, _ = trained
    code, out, err = run(capsys, "train", "--out", str(run_dir), "--preset", "debug", "--steps", "5", "--resume", "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] == 5


SMALL_DEMO = [
    *("--steps", "3", "--oracle-seqs", "3", "--random", "2", "--router-steps", "2", "--arena-tokens", "512"),
    "--data.train=synthetic",
    "--data.val=synthetic-val",
    "--data.tokenizer=bytes",
    "--model.vocab_size=257",
    "--model.n_layer=2",
    "--model.d_model=32",
    "--model.d_big=64",
    "--model.d_small=8",
    "--train.seq_len=32",
    "--train.batch_size=4",
]


def test_demo_runs_end_to_end(tmp_path, capsys):
    demo = tmp_path / "demo"
    code, out, err = run(capsys, "demo", "--out", str(demo), "--json", *SMALL_DEMO)
    assert code == 0, err
    res = json.loads(out)
    assert set(res["ppl"]) == {"all-big", "all-small", "random:0.5", "unigram"} and res["seconds"] > 0
    assert [b["k"] for b in res["oracle"]["budgets"]] == [0, 1, 2, "free"] and res["oracle"]["modes"] == ["shared", "causal"]
    assert res["oracle_skip"]["options"] == "big,skip"
    assert set(res["routers"]) == {"paper", "supervised"} and res["routers"]["supervised"]["gap_recovered"] is not None
    for f in ("oracle/big-small/tokens.jsonl.gz", "oracle/big-skip/summary.json", "difficulty/summary.json", "report/report.html"):
        assert (demo / f).exists(), f
    lf, row1 = res["label_free"], res["oracle"]["budgets"][1]
    assert lf["k"] == 1 and lf["seqs"] == 3 and lf["ppl_fixed"] == pytest.approx(row1["ppl_fixed"], rel=1e-4)  # the oracle's windows
    assert lf["ppl_oracle_shared"] == pytest.approx(row1["ppl_oracle_shared"], rel=1e-4)
    assert lf["ppl_oracle_shared"] <= lf["ppl_label_free"]
    assert json.loads((demo / "label-free-synthetic-val.jsonl").read_text())["ppl_label_free"] == lf["ppl_label_free"]
    assert "The label-free choice takes, per token" in (demo / "report" / "report.html").read_text()  # drawn in the report
    assert [r["label"] for r in res["arena"]] == ["dense", "dense:budget=0.5", "duo-random:budget=0.5"]  # the toy arena
    assert res["arena"][0]["train_tokens"] == 512 and (demo / "arena.png").is_file()
    assert "<h2>Arena</h2>" in (demo / "report" / "report.html").read_text()


def test_demo_prints_each_table_when_it_has_it_and_keeps_it_on_a_failure(tmp_path, capsys, monkeypatch):
    import duollm.cli.demo
    from duollm.errors import DuoError

    run_oracle = duollm.cli.demo.run_oracle

    def fail_on_skip(cmd, progress=True, log=None):  # the second oracle sweep fails, after the first
        if cmd.options == "big,skip":
            raise DuoError("the big/skip sweep failed")
        return run_oracle(cmd, progress, log)

    monkeypatch.setattr(duollm.cli.demo, "run_oracle", fail_on_skip)
    code, out, err = run(capsys, "demo", "--out", str(tmp_path / "demo"), *SMALL_DEMO)
    assert code == 2 and "the big/skip sweep failed" in err
    for head in ("| policy | ppl |", "| BIG layers k | oracle shared | oracle causal | fixed | random best-of-2 |"):
        assert head in out  # printed before the failure
    assert "SKIP layers" not in out and "| router |" not in out
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert {"train", "ppl", "oracle"} <= set(saved) and "oracle_skip" not in saved  # what was computed, kept


@pytest.mark.parametrize("argv", [["demo"], ["report", "--run", "nowhere"]])
def test_a_missing_extra_is_named_before_any_work(tmp_path, capsys, monkeypatch, argv):
    from duollm import extras

    monkeypatch.setitem(extras.EXTRAS, "analysis", ("matplotlib", "duollm_no_such_module"))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and err.strip() == f"duollm: error: duollm {argv[0]} needs duollm_no_such_module: pip install 'duollm[analysis]'"
    assert list(tmp_path.iterdir()) == []  # no run directory started


def test_default_splits_need_no_debian_tools_and_no_fetch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no apt-get, no dpkg: the books come from the package
    run_dir = tmp_path / "run"
    argv = ["--preset", "tiny", "--steps", "2", "--model.n_layer=1", "--train.batch_size=2", "--json"]
    code, out, err = run(capsys, "train", "--out", str(run_dir), *argv)
    assert code == 0, err
    code, out, err = run(
        capsys, "eval", "--run", str(run_dir), "--policy", "all-big", "--split", "prose-val", "--max-tokens", "512", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["split"] == "prose-val" and json.loads(out)["ppl"] > 1


def test_user_data_file(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("some words of text, repeated. " * 50)
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "r"), *DEBUG, "--data", str(tmp_path / "t.txt"))
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"]["train"] == str(tmp_path / "t.txt")


def one_error_line(code, err, match):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--out", "{tmp}/a", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "--out", "{tmp}/a", "--preset", "debug", "--model.n_layers=3"], "unknown config key 'model.n_layers'"),
        (["train", "--out", "{tmp}/a", "--preset", "debug", "--model.n_layer=three"], "model.n_layer must be int"),
        (["train", "--out", "{tmp}/a", "--preset", "debug", "--train.seq_len=999"], "exceeds model.max_seq_len"),
        (["train", "--out", "{tmp}/a", "--preset", "debug", "--train.p_big=0.9"], "sum to 1"),
        (["train", "--out", "{tmp}/a", "--preset", "debug", "--data", "{tmp}/missing.txt"], "data path not found"),
        (["train", "--out", "{tmp}/a", "--preset", "debug", "--data", "{tmp}/empty.txt"], "no text found"),
        (["train", "--out", "{tmp}/a", "--preset", "debug", "--data", "{tmp}/binary.bin"], "looks binary"),
        (["train", "--out", "{tmp}/a", "--preset", "debug", "--data.tokenizer={tmp}/empty.txt"], "cannot load tokenizer"),
        (["train", "--out", "{tmp}/a", "--preset", "debug", "--bogus"], "unrecognized argument"),
        (["train", "--preset", "debug"], "--out"),
        (["eval", "--run", "{tmp}"], "not a run directory"),
        (["eval", "--run", "{tmp}/nowhere"], "not a run directory"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, match):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.bin").write_bytes(b"\x00\x01\x02" * 10)
    code, _, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    one_error_line(code, err, match)
    assert not (tmp_path / "a").exists()  # nothing created


@pytest.mark.parametrize("policy, match", [("BBBB", "has 4 layers"), ("BX", "unknown policy"), ("random:2", "probabilities")])
def test_bad_policy(trained, capsys, policy, match):
    code, _, err = run(capsys, "eval", "--run", str(trained[0]), "--policy", policy, "--split", "synthetic-val")
    one_error_line(code, err, match)


def test_run_dir_holding_another_run_is_kept(trained, capsys):
    run_dir, _ = trained
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, _, err = run(capsys, "train", "--out", str(run_dir), *DEBUG)
    one_error_line(code, err, "already holds a run")
    code, _, err = run(capsys, "train", "--out", str(run_dir), *DEBUG, "--resume", "--model.d_model=64")
    one_error_line(code, err, "holds a different run")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_corrupt_checkpoint(trained, capsys):
    run_dir, _ = trained
    (f,) = run_dir.glob("ckpt/step-*/model.safetensors")
    f.write_bytes(f.read_bytes()[:100])
    code, _, err = run(capsys, "eval", "--run", str(run_dir), "--split", "synthetic-val")
    one_error_line(code, err, "corrupt or truncated")
    code, _, err = run(capsys, "train", "--out", str(run_dir), *DEBUG, "--resume")
    one_error_line(code, err, "corrupt or truncated")


def test_module_entry_point_and_help():
    r = subprocess.run([sys.executable, "-m", "duollm", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "examples:" in r.stdout and "train" in r.stdout
    r = subprocess.run([sys.executable, "-m", "duollm", "train", "--help"], capture_output=True, text=True)
    assert "--ckpt-every" in r.stdout and "run directory" in r.stdout


def test_bench_lists_runs_and_rejects(capsys, tmp_path):
    """`duollm bench` runs a benchmark of the checkout with its own flags passed on; unknown names exit 2."""
    code, out, _ = run_cli(capsys, "bench", "list")
    assert code == 0 and {"ffn", "prefill", "decode", "train"} <= set(out.split())
    code, _, err = run_cli(capsys, "bench", "nope")
    assert code == 2 and "unknown benchmark 'nope'" in err and "ffn" in err
    rows = tmp_path / "ffn.jsonl"
    code, _, _ = run_cli(capsys, "bench", "ffn", "--preset", "debug", "--tokens", "32", "--iters", "1", "--out", str(rows))
    assert code == 0
    impls = {json.loads(line)["impl"] for line in rows.read_text().splitlines()}
    base = {"naive", "ref", "sorted", "counted", "grouped", "bound"}
    assert base <= impls <= base | {"fused"}  # fused: the Triton kernel, on a GPU only


def numeric_flags():
    """(command, flag, Range) for every int or float field of every command: each must declare its range."""
    import dataclasses
    import importlib
    import typing

    from duollm.cli import COMMANDS
    from duollm.flags import base_type, range_of

    out = []
    for name, (mod, cls_name, _) in COMMANDS.items():
        cls = getattr(importlib.import_module(mod), cls_name)
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if base_type(hints[f.name]) in (int, float):
                out.append((name, f.name, base_type(hints[f.name]), range_of(hints[f.name])))
    return out


def outside(tp, rng) -> list[str]:
    """Values just outside a declared range, and for a float NaN and infinity."""
    vals = []
    if rng.lo is not None:
        vals.append(rng.lo if rng.lo_open else rng.lo - 1)
    if rng.hi is not None:
        vals.append(rng.hi + 1)
    vals = [str(tp(v)) for v in vals]
    return vals + (["nan", "inf", "-inf"] if tp is float else [])


def required_args(command: str) -> list[str]:
    import dataclasses
    import importlib

    from duollm.cli import COMMANDS

    mod, cls_name, _ = COMMANDS[command]
    cls = getattr(importlib.import_module(mod), cls_name)
    need = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    return [a for n in need for a in (("x",) if n in getattr(cls, "POSITIONAL", ()) else ("--" + n.replace("_", "-"), "x"))]


def test_every_numeric_flag_declares_its_range():
    flags = numeric_flags()
    assert len(flags) >= 40 and [f"{c} --{n}" for c, n, _, rng in flags if rng is None] == []


@pytest.mark.parametrize("command,field,tp,rng", numeric_flags(), ids=lambda v: v if isinstance(v, str) else "")
def test_an_out_of_range_flag_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, command, field, tp, rng):
    monkeypatch.chdir(tmp_path)  # a command that started would write here
    flag = "--" + field.replace("_", "-")
    for value in outside(tp, rng):
        code, out, err = run(capsys, *command.split(), *required_args(command), f"{flag}={value}")
        assert code == 2 and err.count("\n") == 1 and f"{flag} must be {rng}, got" in err, (value, err)
    assert list(tmp_path.iterdir()) == []


def test_a_window_of_one_token_is_refused(trained, capsys):
    code, out, err = run(capsys, "eval", "--run", str(trained[0]), "--split", "synthetic-val", "--seq-len", "1")
    assert code == 2 and "predicts nothing" in err and not (trained[0] / "evals").exists()


@pytest.mark.parametrize("policy", ["random:nan", "random:inf", "random:0.5,nan,0.5", "random:-0.5,1.5,0", "random:1.5"])
def test_a_random_policy_takes_probabilities_only(trained, capsys, policy):
    code, out, err = run(capsys, "eval", "--run", str(trained[0]), "--policy", policy, "--split", "synthetic-val")
    assert code == 2 and err.count("\n") == 1 and "probabilit" in err
    assert not (trained[0] / "evals").exists()


def numeric_config_keys():
    """(dotted key, type, Range) for every int or float field of the run config that declares a range."""
    import dataclasses
    import typing

    from duollm.config import RunConfig
    from duollm.flags import base_type, range_of

    out = []
    for p in dataclasses.fields(RunConfig):
        if p.default_factory is dataclasses.MISSING:
            continue
        cls = p.default_factory
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if base_type(hints[f.name]) in (int, float) and base_type(hints[f.name]) is not bool and range_of(hints[f.name]):
                out.append((f"{p.name}.{f.name}", base_type(hints[f.name]), range_of(hints[f.name])))
    return out


def test_the_training_config_declares_ranges():
    assert {k for k, _, _ in numeric_config_keys()} >= {"train.lr", "train.batch_size", "train.seq_len", "train.p_big", "train.beta2"}


@pytest.mark.parametrize("key,tp,rng", numeric_config_keys(), ids=lambda v: v if isinstance(v, str) else "")
def test_an_out_of_range_config_override_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, key, tp, rng):
    monkeypatch.chdir(tmp_path)
    for value in outside(tp, rng):
        code, out, err = run(capsys, "train", "--out", "r", f"--{key}={value}")
        assert code == 2 and err.count("\n") == 1 and f"{key} must be" in err, (value, err)
    assert list(tmp_path.iterdir()) == []

"""`duollm oracle` end to end: the JSON contract, the files, bad input, and torchrun sharding.
Run: pytest tests/oracle/test_command.py"""

import gzip
import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import run_cli

SMALL = ["--seqs", "6", "--seq-len", "12", "--batch-size", "4", "--random", "3"]


@pytest.fixture(scope="module")
def run_dir(debug_run):
    return debug_run


def oracle(capsys, *argv):
    return run_cli(capsys, "oracle", *argv)


def test_contract_and_files(run_dir, capsys):
    code, out, _ = oracle(capsys, "--run", str(run_dir), "--mode", "causal", "--json", *SMALL)
    assert code == 0
    s = json.loads(out)
    assert set(s) >= {"mode", "options", "ppl_all_big", "ppl_all_small", "budgets"} and s["mode"] == "causal"
    ks = [b["k"] for b in s["budgets"]]
    assert ks == [0, 1, 2, 3, "free"]
    for b in s["budgets"]:
        assert set(b) >= {"k", "ppl_oracle", "ppl_fixed", "ppl_random_best", "ppl_oracle_shared", "ppl_oracle_causal"}
        assert b["ppl_oracle_shared"] <= b["ppl_fixed"] + 1e-9  # the shared oracle never loses to fixed
    assert s["budgets"][0]["ppl_oracle"] == pytest.approx(s["ppl_all_small"], rel=1e-5)
    assert s["budgets"][3]["ppl_oracle"] == pytest.approx(s["ppl_all_big"], rel=1e-5)
    folder = run_dir / "oracle" / "big-small"
    assert json.loads((folder / "summary.json").read_text())["budgets"] == s["budgets"]
    rows = [json.loads(line) for line in gzip.open(folder / "tokens.jsonl.gz", "rt")]
    assert len(rows) == 6 * 11 and rows[0]["seq"] == 0 and rows[12]["pos"] == 1
    assert {"loss/all-big", "loss/causal/free", "route/shared/2", "loss/random/1", "text"} <= set(rows[0])
    assert all(r["route/shared/2"].count("B") == 2 for r in rows)


def test_causal_for_some_budgets(run_dir, capsys, tmp_path):
    out_dir = tmp_path / "o"
    argv = ["--run", str(run_dir), "--mode", "causal", "--budgets", "0-3", "--causal-budgets", "1,2", "--causal-batch-size", "6"]
    argv += ["--random-budgets", "2"]
    code, out, _ = oracle(capsys, *argv, "--out", str(out_dir), "--json", *SMALL)
    assert code == 0
    rows = {b["k"]: b for b in json.loads(out)["budgets"]}
    assert {k for k, b in rows.items() if "ppl_oracle_causal" in b} == {1, 2}
    assert json.loads(out)["pick"] == "first"
    assert [k for k, b in rows.items() if b["ppl_random_best"] is not None] == [2] and "random_trials" in rows[2]
    assert rows[0]["ppl_oracle"] == rows[0]["ppl_oracle_shared"] and rows[1]["ppl_oracle"] == rows[1]["ppl_oracle_causal"]
    row = json.loads(gzip.open(out_dir / "tokens.jsonl.gz", "rt").readline())
    assert "loss/causal/1" in row and "loss/causal/3" not in row


def test_a_cut_sweep_leaves_its_numbers_so_far(run_dir, capsys, tmp_path, monkeypatch):
    """Killed in the random phase (as at the end of a lease), the oracle has written the shared, fixed and causal
    numbers beside its folder; a finished one removes that file."""
    from duollm.oracle import sweep

    out_dir = tmp_path / "o"
    argv = ["--run", str(run_dir), "--mode", "causal", "--budgets", "1,2", "--out", str(out_dir), "--json", *SMALL]
    done = json.loads(oracle(capsys, *argv)[1])
    partial = tmp_path / "o.partial-summary.json"
    assert not partial.exists()

    def cut(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "draw_routes", cut)
    assert oracle(capsys, *argv)[0] == 130  # interrupted
    s = json.loads(partial.read_text())
    assert s["partial"] == "up to causal" and [b["k"] for b in s["budgets"]] == [1, 2]
    for b, full in zip(s["budgets"], done["budgets"], strict=True):
        assert b["ppl_random_best"] is None and b["ppl_oracle_causal"] == full["ppl_oracle_causal"] and b["ppl_fixed"] == full["ppl_fixed"]


def test_big_skip_schedule_and_table(run_dir, capsys):
    code, out, _ = oracle(capsys, "--run", str(run_dir), "--options", "big,skip", "--budgets", "1,2>0", "--pick", "spread", *SMALL)
    assert code == 0 and "SKIP" in out and "2>0" in out
    s = json.loads((run_dir / "oracle" / "big-skip" / "summary.json").read_text())
    assert [b["k"] for b in s["budgets"]] == [1, "2>0"] and isinstance(s["budgets"][1]["fixed_route"], list)
    assert s["pick"] == "spread" and s["seqs"] == 6


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--budgets", "0-9"], "cannot be met by a 3-layer model"),
        (["--budgets", "x"], "bad budget 'x'"),
        (["--options", "small,skip"], "--options must be one of"),
        (["--mode", "greedy"], "--mode must be shared or causal"),
        (["--max-routes", "4"], "more than --max-routes 4"),
        (["--seq-len", "999"], "--seq-len must be in"),
        (["--mode", "causal", "--budgets", "1", "--causal-budgets", "2"], "--causal-budgets 2 not in --budgets 1"),
        (["--causal-budgets", "1"], "--causal-budgets needs --mode causal"),
        (["--budgets", "1", "--random-budgets", "0-1"], "--random-budgets 0 not in --budgets 1"),
        (["--pick", "last"], "--pick must be one of first, spread"),
        (["--beam", "-1"], "--beam must be >= 0"),
        (["--groups", "-1"], "--groups must be >= 0"),
        (["--groups", "4"], "--groups must be in 0..3"),
        (["--groups", "3", "--budgets", "1"], "budget '1' cannot be met with groups of 3 layers (whole groups add up to 0, 3)"),
        (["--groups", "2", "--options", "big,small,skip", "--budgets", "1/1/1"], "budget '1/1/1' cannot be met with groups of 2+1"),
        (["--groups", "3", "--budgets", "3>0"], "budget '3>0' (at 1) cannot be met"),
        (
            ["--beam", "1", "--max-routes", "4", "--budgets", "1"],
            "the beam search scores up to 6 routes per token, more than --max-routes 4",
        ),
    ],
)
def test_bad_input(run_dir, capsys, argv, match):
    code, _, err = oracle(capsys, "--run", str(run_dir), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_torchrun_shards_match_one_process(run_dir, tmp_path):
    """2 gloo ranks, each with a block of the windows, write the same table as one process.
    (`--` keeps torchrun's own parser off `--run`, which it would take for an abbreviation of `--run-path`.)"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on the CPU, also on a GPU machine
    args = ["-m", "duollm", "--", "oracle", "--run", str(run_dir), "--budgets", "1,free", "--mode", "causal", "--json", *SMALL]
    one = subprocess.run([sys.executable, *[a for a in args if a != "--"]], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    table = gzip.open(run_dir / "oracle" / "big-small" / "tokens.jsonl.gz", "rt").read()
    with socket.socket() as sock:  # a free port, so that concurrent runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    two = subprocess.run([*dist, *args], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    s1, s2 = json.loads(one.stdout), json.loads(two.stdout.strip().splitlines()[-1])
    assert s2["ranks"] == 2 and s1["ranks"] == 1
    for a, b in zip(s1["budgets"], s2["budgets"], strict=True):
        for key in ("ppl_oracle", "ppl_fixed", "ppl_oracle_shared"):
            assert a[key] == pytest.approx(b[key], rel=1e-5)
    # batches differ between one process and two ranks, so float sums differ in the last bits: minima agree to
    # rounding, and argmins may flip only where two routes tie to rounding (a barely trained model has such ties)
    rows1 = [json.loads(x) for x in table.splitlines()]
    rows2 = [json.loads(x) for x in gzip.open(run_dir / "oracle" / "big-small" / "tokens.jsonl.gz", "rt")]
    assert len(rows1) == len(rows2) == 6 * 11
    same = 0
    for r1, r2 in zip(rows1, rows2, strict=True):
        assert (r1["seq"], r1["pos"], r1["token"]) == (r2["seq"], r2["pos"], r2["token"])
        assert r1["loss/causal/free"] == pytest.approx(r2["loss/causal/free"], abs=1e-4)
        assert r1["loss/shared/free"] == pytest.approx(r2["loss/shared/free"], abs=1e-4)
        same += r1["route/shared/free"] == r2["route/shared/free"]
    assert same >= 0.9 * len(rows1)


def test_no_random_trials_check_no_random_budgets(run_dir, capsys, tmp_path):
    """--random 0 runs no trials, so budgets named for them alone are not an error (the study's default 4,8 with --budgets 0,6,12)."""
    argv = ["--budgets", "1", "--random", "0", "--random-budgets", "0-1", "--out", str(tmp_path / "o"), "--json"]
    code, out, err = oracle(capsys, "--run", str(run_dir), *SMALL, *argv)  # the last --random wins
    assert code == 0, err
    assert [b["ppl_random_best"] for b in json.loads(out)["budgets"]] == [None]


def test_a_beam_that_covers_every_route_gives_the_exhaustive_numbers(run_dir, capsys, tmp_path):
    """3 layers: C(3, k) <= 3 routes, so a beam of 8 keeps every prefix: the same oracle and fixed perplexities."""
    base = ["--run", str(run_dir), "--mode", "causal", "--budgets", "1,2,free", "--random", "0", "--json", *SMALL[:6]]
    ex = json.loads(oracle(capsys, *base, "--out", str(tmp_path / "ex"))[1])
    code, out, err = oracle(capsys, *base, "--beam", "8", "--out", str(tmp_path / "beam"))
    assert code == 0, err
    bm = json.loads(out)
    assert (bm["beam"], bm["groups"], ex["beam"], ex["groups"]) == (8, 1, 0, 1)
    for a, b in zip(ex["budgets"], bm["budgets"], strict=True):
        assert a["ppl_oracle_shared"] == b["ppl_oracle_shared"] and a["ppl_fixed"] == b["ppl_fixed"] and a["n_routes"] == b["n_routes"]
        assert a["ppl_oracle_causal"] == pytest.approx(b["ppl_oracle_causal"], rel=1e-5)
    narrow = json.loads(oracle(capsys, *base, "--beam", "1", "--out", str(tmp_path / "narrow"))[1])
    for a, b in zip(ex["budgets"], narrow["budgets"], strict=True):
        assert b["ppl_oracle_shared"] >= a["ppl_oracle_shared"]


def test_groups_in_every_column(run_dir, capsys, tmp_path):
    """--groups 3 on 3 layers: one unit, so every route is all-big or all-small; the default budgets are those
    whole groups can meet, and the oracles, fixed and random keep to grouped routes."""
    argv = ["--run", str(run_dir), "--groups", "3", "--mode", "causal", "--out", str(tmp_path / "g"), *SMALL]
    code, out, err = oracle(capsys, *argv, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert [b["k"] for b in s["budgets"]] == [0, 3, "free"] and s["groups"] == 3
    assert [b["n_routes"] for b in s["budgets"]] == [1, 1, 2]
    rows = [json.loads(line) for line in gzip.open(tmp_path / "g" / "tokens.jsonl.gz", "rt")]
    for col in ("shared/free", "causal/free", "random/free", "fixed/free"):
        if f"route/{col}" in rows[0]:
            assert {r[f"route/{col}"] for r in rows} <= {"BBB", "SSS"}
    code, out, err = oracle(capsys, *argv, "--beam", "2")  # the table names the beam and the groups
    assert code == 0 and "beam 2; groups of 3 layers" in out.splitlines()[0], err


def test_max_routes_counts_the_beam_work(tmp_path, capsys):
    """8 layers, 4 BIG: C(8, 4) = 70 routes, refused at --max-routes 50; a beam of width 1 scores 16 per token."""
    from tests.conftest import train_debug_run

    run = train_debug_run(tmp_path / "r8", 8)
    argv = ["--run", str(run), "--budgets", "4", "--max-routes", "50", "--json", *SMALL]
    code, _, err = oracle(capsys, *argv)
    assert code == 2 and "the search covers 70 routes, more than --max-routes 50" in err
    code, out, err = oracle(capsys, *argv, "--beam", "1")
    assert code == 0, err
    row = json.loads(out)["budgets"][0]
    assert row["n_routes"] == 70 and row["ppl_oracle"] <= row["ppl_fixed"] + 1e-9

"""`duollm router train / eval` and `duollm eval --policy router:NAME` end to end. Run: pytest tests/routers"""

import json

import pytest

from duollm.cli import main
from tests.conftest import run_cli, train_debug_run

SMALL = ["--seq-len", "12", "--calib-seqs", "4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = train_debug_run(tmp_path_factory.mktemp("routers") / "run", 2)
    assert main(["oracle", "--run", str(out), "--mode", "causal", "--seqs", "4", "--seq-len", "12", "--random", "2", "--json"]) == 0
    return out


cli = run_cli


def test_train_and_eval_both_kinds(run_dir, capsys):
    for kind, extra in (("paper", ["--steps", "3", "--batch-size", "2"]), ("supervised", ["--label-seqs", "4"])):
        code, out, err = cli(capsys, "router", "train", "--run", str(run_dir), "--kind", kind, "--budget", "0.5", "--json", *SMALL, *extra)
        assert code == 0, err
        meta = json.loads(out)
        assert meta["name"] == f"{kind}-0.5" and (run_dir / "routers" / meta["name"] / "router.safetensors").exists()
        code, out, err = cli(capsys, "router", "eval", "--run", str(run_dir), "--kind", kind, "--budget", "0.5", "--json")
        assert code == 0, err
        res = json.loads(out)
        assert set(res) >= {"kind", "target", "realized", "ppl", "gap_recovered"} and res["kind"] == kind
        assert res["tokens"] == 4 * 11 and res["gap_recovered"] is not None  # scored on the oracle's windows
        assert (run_dir / "routers" / meta["name"] / "eval-synthetic-val.json").exists()
    sup = json.loads((run_dir / "routers" / "supervised-0.5" / "eval-synthetic-val.json").read_text())
    assert sup["realized"]["big"] == 0.5  # exact budgets: one BIG layer of two, every token
    code, out, err = cli(
        capsys,
        "eval",
        "--run",
        str(run_dir),
        "--policy",
        "router:supervised-0.5",
        "--split",
        "synthetic-val",
        "--seq-len",
        "12",
        "--max-tokens",
        "48",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["ppl"] == pytest.approx(sup["ppl"], rel=1e-4)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["router", "train", "--kind", "magic"], "--kind must be paper or supervised"),
        (["router", "train", "--budget", "lots"], "bad --budget 'lots'"),
        (["router", "train", "--budget", "1.5"], "must lie in [0, 1]"),
        (["router", "train", "--kind", "supervised", "--budget", "0.3"], "must be whole layers"),
        (["router", "train", "--options", "big,small,skip", "--budget", "0.5"], "three fractions"),
        (["router", "train", "--dtype", "fp16"], "--dtype must be fp32 or bf16"),
        (["router", "eval", "--name", "nope"], "no router 'nope'"),
        (["router", "eval", "--name", "nope", "--dtype", "half"], "--dtype must be fp32 or bf16"),
        (["eval", "--policy", "router:nope"], "no router 'nope'"),
    ],
)
def test_bad_input(run_dir, capsys, argv, match):
    code, _, err = (
        cli(capsys, *argv[:2], "--run", str(run_dir), *argv[2:])
        if argv[0] == "router"
        else cli(capsys, argv[0], "--run", str(run_dir), *argv[1:])
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_other_split_through_out_and_oracle(run_dir, capsys, tmp_path):
    """An oracle on another split goes to its own folder (--out), and router eval compares against it (--oracle)."""
    other = tmp_path / "oracle-other"
    code, _, err = cli(
        capsys,
        "oracle",
        "--run",
        str(run_dir),
        "--split",
        "synthetic",
        "--mode",
        "causal",
        "--seqs",
        "3",
        "--seq-len",
        "12",
        "--random",
        "0",
        "--out",
        str(other),
    )
    assert code == 0, err
    assert (other / "summary.json").exists() and json.loads((run_dir / "oracle" / "big-small" / "summary.json").read_text())[
        "split"
    ] == "synthetic-val"
    code, _, err = cli(capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--name", "s", "--label-seqs", "2", *SMALL)
    assert code == 0, err
    code, out, err = cli(
        capsys, "router", "eval", "--run", str(run_dir), "--name", "s", "--split", "synthetic", "--oracle", str(other), "--json"
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["split"] == "synthetic" and res["tokens"] == 3 * 11 and res["gap_recovered"] is not None
    code, _, err = cli(capsys, "router", "eval", "--run", str(run_dir), "--name", "s", "--oracle", str(tmp_path / "none"))
    assert code == 2 and "holds no summary.json" in err


def test_eval_follows_the_oracles_precision(run_dir, capsys):
    """`router eval` runs at the oracle's --dtype unless told otherwise, and gives no gap against an oracle run at another."""
    code, _, err = cli(capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--name", "p", "--label-seqs", "2", *SMALL)
    assert code == 0, err
    code, out, err = cli(capsys, "router", "eval", "--run", str(run_dir), "--name", "p", "--json")
    assert code == 0, err
    same = json.loads(out)
    assert same["dtype"] == "fp32" and same["gap_recovered"] is not None  # the oracle ran at fp32 (its default)
    code, out, err = cli(capsys, "router", "eval", "--run", str(run_dir), "--name", "p", "--dtype", "bf16", "--json")
    assert code == 0, err
    other = json.loads(out)
    assert other["dtype"] == "bf16" and other["gap_recovered"] is None and "ppl_causal_oracle" not in other


def test_shared_labels_get_their_own_name(run_dir, capsys):
    """--labels shared trains beside the causal-labelled router of the same budget instead of overwriting it."""
    train = ["router", "train", "--run", str(run_dir), "--kind", "supervised", "--budget", "0.5", "--label-seqs", "4", "--json", *SMALL]
    code, out, err = cli(capsys, *train)
    assert code == 0 and json.loads(out)["name"] == "supervised-0.5", err
    causal = (run_dir / "routers" / "supervised-0.5" / "router.json").read_bytes()
    code, out, err = cli(capsys, *train, "--labels", "shared")
    assert code == 0, err
    meta = json.loads(out)
    assert meta["name"] == "supervised-shared-0.5" and meta["config"]["labels"] == "shared"
    assert (run_dir / "routers" / "supervised-0.5" / "router.json").read_bytes() == causal


def test_layer_head(run_dir, capsys):
    """--head layer: the paper router's shape fitted to the oracle, calibrated to the budget, scored like any router."""
    code, out, err = cli(
        capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "layer", "--label-seqs", "4", "--json", *SMALL
    )
    assert code == 0, err
    meta = json.loads(out)
    assert meta["name"] == "supervised-layer-0.5" and len(meta["calibration"]["ridge"]) == 2  # one strength per layer
    assert abs(meta["calibration"]["realized"]["big"] - 0.5) <= 0.1  # 4 windows × 12 tokens × 2 layers: coarse steps
    code, out, err = cli(capsys, "router", "eval", "--run", str(run_dir), "--name", "supervised-layer-0.5", "--json")
    assert code == 0, err
    assert json.loads(out)["gap_recovered"] is not None
    code, out, err = cli(
        capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "layer", "--label-seqs", "4", *SMALL
    )
    assert code == 0 and "fitted on 4 oracle-labelled windows, held-out squared error" in out and "steps" not in out, out
    code, _, err = cli(
        capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "layer", "--options", "big,small,skip"
    )
    assert code == 2 and "give two options" in err
    code, out, err = cli(
        capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "layer", "--values", "mean", "--labels", "shared",
        "--label-seqs", "4", "--json", *SMALL,
    )  # fmt: skip
    assert code == 0, err
    mean = json.loads(out)
    assert mean["name"] == "supervised-layer-mean-shared-0.5" and abs(mean["calibration"]["realized"]["big"] - 0.5) <= 0.1
    shrink = ["router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "layer", "--values", "mean", "--shrink"]
    code, out, err = cli(capsys, *shrink, "--label-seqs", "8", "--json", *SMALL)
    assert code == 0, err
    meta = json.loads(out)
    assert meta["name"] == "supervised-layer-mean-shrink-0.5" and meta["calibration"]["shrink"] in (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
    assert set(meta["calibration"]["shrink_losses"]) == {"0.0", "0.125", "0.25", "0.5", "0.75", "1.0"}
    assert abs(meta["calibration"]["realized"]["big"] - 0.5) <= 0.1
    code, out, err = cli(capsys, *shrink, "--name", "shrink-line", "--label-seqs", "8", *SMALL)
    assert code == 0 and ("scores shrunk by" in out or "the fixed route (no shrink" in out), out
    code, _, err = cli(capsys, *shrink, "--budget", "0.25")
    assert code == 2 and "--shrink compares with the fixed route" in err and "whole layers" in err
    code, _, err = cli(capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "layer", "--shrink")
    assert code == 2 and "--shrink is for the layer head with mean values" in err
    code, _, err = cli(capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "layer", "--values", "avg")
    assert code == 2 and "--values must be flip or mean" in err
    code, _, err = cli(capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "tree")
    assert code == 2 and "--head must be route, layer, priced or expected" in err


def test_expected_head(run_dir, capsys):
    """--head expected: the paper router's shape and objective, the expectation over the oracle's table of every route."""
    train = ["router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "expected", "--labels", "shared"]
    code, out, err = cli(capsys, *train, "--label-seqs", "8", "--steps", "50", "--json", *SMALL)
    assert code == 0, err
    meta = json.loads(out)
    assert meta["name"] == "supervised-expected-shared-0.5" and abs(meta["calibration"]["realized"]["big"] - 0.5) <= 0.1
    assert meta["calibration"]["holdout_loss"] <= meta["calibration"]["holdout_fixed_loss"]  # kept only when better
    code, out, err = cli(capsys, "router", "eval", "--run", str(run_dir), "--name", meta["name"], "--json")
    assert code == 0 and json.loads(out)["gap_recovered"] is not None, err
    code, _, err = cli(capsys, *train, "--budget", "0.25")
    assert code == 2 and "--head expected compares with the fixed route" in err
    code, _, err = cli(capsys, *train, "--options", "big,small,skip")
    assert code == 2 and "give two options" in err


def test_expected_head_tuned(run_dir, capsys):
    """--tune N: the expected head (here on causal labels) then N steps of the paper's objective through the model."""
    train = ["router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "expected", "--label-seqs", "8", "--steps", "50"]
    code, out, err = cli(capsys, *train, "--json", *SMALL)
    assert code == 0, err
    assert json.loads(out)["name"] == "supervised-expected-0.5"  # causal labels: no -shared
    code, out, err = cli(capsys, *train, "--tune", "3", "--batch-size", "2", "--json", *SMALL)
    assert code == 0, err
    meta = json.loads(out)
    assert meta["name"] == "supervised-expected-tuned-0.5" and meta["calibration"]["tune"]["steps"] == 3
    assert abs(meta["calibration"]["realized"]["big"] - 0.5) <= 0.1
    from safetensors.torch import load_file

    plain, tuned = (load_file(run_dir / "routers" / n / "router.safetensors") for n in ("supervised-expected-0.5", meta["name"]))
    assert any(not (plain[k] == tuned[k]).all() for k in plain if k.startswith("layers.")), "the paper's steps moved nothing"
    code, out, err = cli(capsys, *train, "--tune", "2", "--batch-size", "2", "--name", "tuned-line", *SMALL)
    assert code == 0 and "then 2 steps of the paper's objective" in out, out
    code, _, err = cli(capsys, "router", "train", "--run", str(run_dir), "--kind", "paper", "--tune", "5")
    assert code == 2 and "--tune continues a layer or expected head" in err
    code, _, err = cli(capsys, *train, "--tune", "-1")
    assert code == 2 and "--tune must be >= 0" in err


def test_priced_head(run_dir, capsys):
    """--head priced: every route labelled, a price per BIG layer; on this tiny run it keeps the budget (exactly, when it
    falls back to the fixed route) and is scored like any router."""
    train = ["router", "train", "--run", str(run_dir), "--kind", "supervised", "--head", "priced", "--labels", "shared"]
    code, out, err = cli(capsys, *train, "--label-seqs", "8", "--json", *SMALL)
    assert code == 0, err
    meta = json.loads(out)
    assert meta["name"] == "supervised-priced-shared-0.5" and "price" in meta["calibration"]
    assert abs(meta["calibration"]["realized"]["big"] - 0.5) <= 0.02
    code, out, err = cli(capsys, "router", "eval", "--run", str(run_dir), "--name", meta["name"], "--json")
    assert code == 0 and json.loads(out)["gap_recovered"] is not None, err
    code, out, err = cli(capsys, *train, "--options", "big,skip", "--label-seqs", "8", "--json", *SMALL)
    assert code == 0, err
    skip = json.loads(out)
    assert skip["name"] == "supervised-priced-shared-0.5-big-skip" and abs(skip["calibration"]["realized"]["skip"] - 0.5) <= 0.02
    code, out, err = cli(capsys, *train, "--name", "priced-line", "--label-seqs", "8", *SMALL)
    assert code == 0 and "oracle-labelled windows, held-out loss" in out and "(fixed)" in out, out  # decision losses, not errors
    code, _, err = cli(capsys, *train, "--budget", "0.3")
    assert code == 2 and "must be whole layers" in err
    code, _, err = cli(capsys, *train, "--options", "big,small,skip")
    assert code == 2 and "give two options" in err


def test_calibrate_again_on_other_text(run_dir, capsys, tmp_path):
    """`router calibrate`: the offsets set again on the text a router will serve, saved as a new router; the old one
    stays as it was."""
    text = tmp_path / "other.txt"
    text.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(300)))
    code, _, err = cli(
        capsys, "router", "train", "--run", str(run_dir), "--kind", "paper", "--name", "pc", "--steps", "3", "--batch-size", "2", *SMALL
    )
    assert code == 0, err
    code, _, err = cli(
        capsys, "router", "train", "--run", str(run_dir), "--kind", "supervised", "--name", "sc", "--label-seqs", "2", *SMALL
    )
    assert code == 0, err
    before = (run_dir / "routers" / "pc" / "router.json").read_bytes()
    code, out, err = cli(
        capsys, "router", "calibrate", "--run", str(run_dir), "--name", "pc", "--data", str(text), "--seq-len", "12", "--json"
    )
    assert code == 0, err
    meta = json.loads(out)
    assert meta["name"] == "pc-cal-other.txt" and meta["calibrated_from"]["name"] == "pc" and meta["calibration"]["data"] == str(text)
    assert abs(meta["calibration"]["realized"]["big"] - 0.5) <= 0.02
    assert (run_dir / "routers" / "pc" / "router.json").read_bytes() == before
    code, out, err = cli(
        capsys, "router", "eval", "--run", str(run_dir), "--name", "pc-cal-other.txt", "--data", str(text), "--seq-len", "12", "--json"
    )
    assert code == 0, err
    assert abs(json.loads(out)["realized"]["big"] - 0.5) <= 0.05  # every window of the text, not only the 16 drawn
    for argv, match in (
        (["--name", "pc"], "exists; give the new router another name"),
        (["--name", "pc", "--out", "pc2", "--dtype", "fp16"], "--dtype must be fp32 or bf16"),
        (["--name", "sc", "--out", "s2"], "nothing to calibrate"),
        (["--name", "nope"], "no router 'nope'"),
    ):
        code, _, err = cli(capsys, "router", "calibrate", "--run", str(run_dir), "--data", str(text), *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_no_gap_for_a_budget_of_no_whole_layers(run_dir, capsys):
    """0.3 of 2 layers is 0.6 BIG layers a token: no oracle row has that budget, so no gap recovered (rounding it to
    the k = 1 row would compare the router with an oracle that spends two thirds more)."""
    code, _, err = cli(
        capsys, "router", "train", "--run", str(run_dir), "--kind", "paper", "--budget", "0.3", "--steps", "2", "--batch-size", "2", *SMALL
    )
    assert code == 0, err
    code, out, err = cli(capsys, "router", "eval", "--run", str(run_dir), "--name", "paper-0.3", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["gap_recovered"] is None and "k" not in res and res["tokens"] == 4 * 11  # still on the oracle's windows

"""experiments/routers/demo_seeds.sh on a tiny trained run. Run: pytest tests/analysis/test_demo_seeds.py"""

import json
import os
import subprocess
import sys
from pathlib import Path

from duollm.cli import main
from tests.conftest import train_debug_run

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "routers" / "demo_seeds.sh"
SPEC = "p:--kind paper --budget 0.5 --steps 2 --batch-size 2 --seq-len 12 --calib-seqs 4"


def demo_seeds(run, *specs, seeds="0 1") -> subprocess.CompletedProcess:
    env = {**os.environ, "RUN": str(run), "SEEDS": seeds, "JOBS": "2", "DUOLLM": f"{sys.executable} -m duollm"}
    return subprocess.run(["bash", str(SCRIPT), *specs], capture_output=True, text=True, env=env)


def test_trains_and_scores_every_seed_then_resumes(tmp_path):
    run = train_debug_run(tmp_path / "run", 2)
    assert main(["oracle", "--run", str(run), "--mode", "causal", "--seqs", "4", "--seq-len", "12", "--random", "2", "--json"]) == 0
    res = demo_seeds(run, SPEC)
    assert res.returncode == 0, res.stdout + res.stderr
    for s in (0, 1):
        folder = run / "routers" / f"p-s{s}"
        meta = json.loads((folder / "router.json").read_text())
        assert meta["config"]["seed"] == s and meta["config"]["steps"] == 2
        assert json.loads((folder / "eval-synthetic-val.json").read_text())["tokens"] == 4 * 11  # the oracle's windows
    assert sorted(res.stdout.splitlines())[0].startswith("p-s0: router p-s0 on synthetic-val")
    again = demo_seeds(run, SPEC, seeds="0 1 2")  # the evaluated ones are kept, the new seed trained
    assert again.returncode == 0 and {"p-s0: kept", "p-s1: kept"} <= set(again.stdout.splitlines()), again.stdout
    assert (run / "routers" / "p-s2" / "eval-synthetic-val.json").exists()
    bad = demo_seeds(run, "p:--kind nonsense", seeds="5")
    assert (
        bad.returncode != 0
        and "p-s5: FAILED" in bad.stdout
        and "--kind must be paper or supervised" in (run / "logs" / "p-s5.log").read_text()
    )


def test_bad_input(tmp_path):
    res = demo_seeds(tmp_path, SPEC)
    assert res.returncode == 2 and "is not a trained run" in res.stderr
    (tmp_path / "ckpt").mkdir()
    res = demo_seeds(tmp_path, "no-colon")
    assert res.returncode == 2 and "is not PREFIX:ARGS" in res.stderr
    res = demo_seeds(tmp_path)
    assert res.returncode == 2 and "at least one PREFIX:ARGS" in res.stderr

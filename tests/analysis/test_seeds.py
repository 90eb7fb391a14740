"""experiments/routers/seeds.py on a hand-made run. Run: pytest tests/analysis/test_seeds.py"""

import subprocess
import sys
from pathlib import Path

from .conftest import PAPER_ROUTES, SMALL, write_oracle, write_router

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "routers" / "seeds.py"


def seeds(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_means_over_seeds_and_their_difference(tmp_path):
    """fixed/2's loss is SMALL - 0.2 on every token: routers at SMALL - 0.2 - d are d better than it."""
    run = tmp_path / "run"
    write_oracle(run, "big,small")
    for name, d in (("a0", 0.01), ("a1", 0.03), ("b0", 0.05), ("b1", 0.09)):
        write_router(run, name, "paper", {"big": 0.5, "small": 0.5}, SMALL - 0.2 - d, PAPER_ROUTES)
    res = seeds(run, "a", "b", "--seeds", "2")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "a*: minus fixed -0.0100 -0.0300; mean -0.0200 ± 0.0100"
    assert lines[2] == "b*: minus fixed -0.0500 -0.0900; mean -0.0700 ± 0.0200"
    # means: -0.05 ± sqrt(0.01² + 0.02²) = 0.0224; paired: differences -0.04, -0.06, their mean's error 0.01
    assert lines[4] == "b* - a*: -0.0500 ± 0.0224 (means); paired by seed ± 0.0100"


def test_bad_input_is_one_line(tmp_path):
    run = tmp_path / "run"
    write_oracle(run, "big,small")
    res = seeds(run, "a", "b")
    assert res.returncode == 2 and res.stderr.strip().startswith("error: no router a0 in") and "Traceback" not in res.stderr
    res = seeds(run, "a", "b", "--seeds", "1")
    assert res.returncode == 2 and "--seeds must be at least 2" in res.stderr

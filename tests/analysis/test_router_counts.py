"""scripts/router_counts.py on a hand-made run. Run: pytest tests/analysis/test_router_counts.py"""

import gzip
import json
import subprocess
import sys
from pathlib import Path

from .conftest import PAPER_LOSS, PAPER_ROUTES, write_oracle, write_router

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "router_counts.py"


def counts(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_counts_gain_and_groups(tmp_path):
    run = tmp_path / "run"
    tokens = write_oracle(run, "big,small") / "tokens.jsonl.gz"
    with gzip.open(tokens, "rt") as f:
        rows = [json.loads(line) for line in f]
    for r in rows:  # all-big gains 0.5 on sequence 0, whose tokens the router gives 2 BIG layers, 0.1 on sequence 1 (1 BIG)
        r["loss/all-big"] = r["loss/all-small"] - (0.5 if r["seq"] == 0 else 0.1)
    with gzip.open(tokens, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    write_router(run, "r", "paper", {"big": 0.5, "small": 0.5}, PAPER_LOSS, PAPER_ROUTES)
    write_router(run, "untried", "paper", {"big": 0.5, "small": 0.5})  # no evaluation
    res = counts(run)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:3] == [
        "r: 12 tokens, mean BIG 1.500, 2 distinct routes",
        "  tokens by BIG count: 1: 6, 2: 6",
        "  correlation of BIG count with BIG gain: 1.000",
    ]
    # the router's loss is SMALL - 0.3 GAIN and fixed/2's SMALL - 0.2; GAIN averages 0.9667 on sequence 1, 1.0833 on 0
    assert lines[3:5] == [
        "   1-1  BIG: share 0.500, BIG gain +0.1000, minus fixed/2 -0.0900",
        "   2-2  BIG: share 0.500, BIG gain +0.5000, minus fixed/2 -0.1250",
    ]
    assert lines[5] == "untried: not evaluated on the oracle's windows at a budget it holds; skipped"


def test_bad_input_is_one_line(tmp_path):
    run = tmp_path / "run"
    write_oracle(run, "big,small")
    res = counts(run, "nope")
    assert res.returncode == 2 and res.stderr.strip() == f"error: no big/small router nope in {run}/routers"
    res = counts(tmp_path / "nowhere")
    assert res.returncode == 2 and "not a directory" in res.stderr and "Traceback" not in res.stderr

"""scripts/router_counts.py on hand-made per-token tables. Run: pytest tests/analysis/test_router_counts.py"""

import gzip
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "router_counts.py"


def write(path: Path, rows: list[dict]) -> str:
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def test_counts_gain_and_groups(tmp_path):
    # four tokens of a 4-layer model: two hard ones (BIG saves 1 nat) the router gives 3 BIG, two easy ones it gives 1
    gains = [1.0, 1.0, 0.0, 0.0]
    oracle = [{"seq": 0, "pos": i, "loss/all-small": 3.0, "loss/all-big": 3.0 - g, "loss/fixed/2": 2.5} for i, g in enumerate(gains)]
    router = [
        {"seq": 0, "pos": i, "route": r, "loss": loss}
        for i, (r, loss) in enumerate([("BBBS", 2.1), ("SBBB", 2.3), ("SSSB", 2.5), ("BSSS", 2.9)])
    ]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), write(tmp_path / "o.jsonl.gz", oracle), "r=" + write(tmp_path / "r.jsonl.gz", router)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "r: 4 tokens, mean BIG 2.000, 4 distinct routes" in out
    assert "tokens by BIG count: 1: 2, 3: 2" in out
    assert "correlation of BIG count with BIG gain: 1.000" in out
    assert "0-2  BIG: share 0.500, BIG gain +0.0000, minus fixed/2 +0.2000" in out
    assert "3-4  BIG: share 0.500, BIG gain +1.0000, minus fixed/2 -0.3000" in out


def test_missing_fixed_budget_is_one_line(tmp_path):
    oracle = [{"seq": 0, "pos": 0, "loss/all-small": 3.0, "loss/all-big": 2.0, "loss/fixed/1": 2.5}]
    router = [{"seq": 0, "pos": 0, "route": "BBSS", "loss": 2.0}]
    res = subprocess.run(
        [sys.executable, str(SCRIPT), write(tmp_path / "o.jsonl.gz", oracle), "r=" + write(tmp_path / "r.jsonl.gz", router)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "has no fixed route at k = 2" in res.stderr and "Traceback" not in res.stderr

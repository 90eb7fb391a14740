"""Token difficulty: D_conv and D_rel, rank correlation, the top tokens, and `duollm difficulty`.
Run: pytest tests/analysis/test_difficulty.py"""

import json
import math

import numpy as np
import pytest

from duollm.analysis.difficulty import difficulty, measure, pearson, ranks, spearman, top_tokens
from duollm.analysis.table import read_table
from duollm.cli import main
from duollm.errors import DuoError

from .conftest import GAIN, SMALL


def test_measures_equal_hand_values(run_dir):
    t = read_table(run_dir)
    d_conv, d_rel = difficulty(t)
    assert np.allclose(d_conv, SMALL) and np.allclose(d_rel, GAIN)
    _, d_rel = difficulty(t, "shared", "2")  # budget 2 of 4 gains half of GAIN
    assert np.allclose(d_rel, GAIN / 2)
    _, d_rel = difficulty(t, "causal", "free")  # the causal oracle gains 0.9 of GAIN
    assert np.allclose(d_rel, 0.9 * GAIN)


def test_ranks_and_correlations():
    assert ranks(np.array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: covariance 4.5, variances 4.5 and 5 → 4.5 / sqrt(22.5) = sqrt(0.9)
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(math.sqrt(0.9))
    x = np.linspace(0.1, 5.0, 50)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0) and spearman(x, -(x**3)) == pytest.approx(-1.0)
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0) and pearson(x, np.exp(x)) < 1.0
    assert spearman(x, np.zeros_like(x)) is None and pearson(x, np.ones_like(x)) is None


def test_top_tokens_with_context(run_dir):
    t = read_table(run_dir)
    d_conv, d_rel = difficulty(t)
    top = top_tokens(t, d_rel, d_conv, d_rel, 3, 2)
    assert [(r["seq"], r["pos"], r["context"], r["text"]) for r in top] == [
        (1, 1, "A", " dog"),
        (0, 5, " on the", " mat"),
        (0, 2, "The cat", " sat"),
    ]
    assert [(r["d_conv"], r["d_rel"]) for r in top] == [(7.0, 4.0), (6.5, 3.0), (5.0, 2.0)]
    s = measure(t, top=3, context=2)
    assert [(r["seq"], r["pos"], r["context"]) for r in s["top_conv"]] == [(1, 4, " <ran> &"), (1, 1, "A"), (0, 5, " on the")]
    assert s["top_rel"] == top and s["tokens"] == 12
    assert s["mean_d_conv"] == pytest.approx(SMALL.mean()) and s["mean_d_rel"] == pytest.approx(GAIN.mean())
    assert s["spearman"] == pytest.approx(spearman(SMALL, GAIN), abs=1e-5)
    assert measure(t, top=0)["top_rel"] == []
    assert measure(t, context=0)["top_rel"][0]["context"] == ""


def test_unknown_budget_or_mode_lists_what_is_there(run_dir):
    with pytest.raises(DuoError, match=r"budget '7'; budgets present: 0, 1, 2, 3, 4, free, 3>1"):
        difficulty(read_table(run_dir), "shared", "7")
    with pytest.raises(DuoError, match="no 'causal' oracle .*--mode causal"):
        difficulty(read_table(run_dir, "big,skip"), "causal", "free")
    with pytest.raises(DuoError, match="--top"):
        measure(read_table(run_dir), top=-1)


def test_command_writes_summary(run_dir, capsys):
    assert main(["difficulty", "--run", str(run_dir), "--top", "2", "--context", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "difficulty" / "summary.json").read_text())
    assert out == saved and list((run_dir / "difficulty").iterdir()) == [run_dir / "difficulty" / "summary.json"]
    assert set(saved) >= {"options", "mode", "budget", "tokens", "spearman", "pearson", "mean_d_conv", "mean_d_rel", "top_conv", "top_rel"}
    assert saved["top_rel"][0] == {"seq": 1, "pos": 1, "context": "A", "text": " dog", "d_conv": 7.0, "d_rel": 4.0}
    assert main(["difficulty", "--run", str(run_dir), "--budget", "2"]) == 0
    out = capsys.readouterr().out
    assert "spearman" in out and "shared/2" in out and "[ dog]" in out


def test_command_bad_input_is_one_line(tmp_path, run_dir, capsys):
    for argv in (
        ["--run", str(tmp_path)],
        ["--run", str(run_dir), "--budget", "9"],
        ["--run", str(run_dir), "--options", "big,skip", "--mode", "causal"],
    ):
        assert main(["difficulty", *argv]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("duollm: error:")
    assert not (run_dir / "difficulty").exists()

"""The oracle table reader: values and routes round-trip; missing or malformed files name the problem.
Run: pytest tests/analysis/test_table.py"""

import gzip
import json

import numpy as np
import pytest

from duollm.analysis.table import BIG, SKIP, parse_routes, read_summary, read_table, spread, usage
from duollm.errors import DuoError

from .conftest import GAIN, LABELS, SMALL, TEXT, oracle_loss, rotated, write_oracle


def test_round_trip(run_dir):
    t = read_table(run_dir, "big,small")
    assert t.n_layer == 4 and t.options == "big,small" and t.summary["tokens"] == 12
    assert t.labels("shared") == LABELS and t.labels("causal") == LABELS
    assert t.text == TEXT
    assert np.array_equal(t.token, [[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]])
    assert np.allclose(t.loss["all-small"], SMALL) and np.allclose(t.loss["shared/free"], SMALL - GAIN)
    assert np.allclose(t.loss["causal/2"], oracle_loss("2", 0.9))
    assert t.route["shared/2"].shape == (2, 6, 4) and t.route["shared/2"].dtype == np.uint8
    assert "fixed/2" not in t.route and "all-small" not in t.route
    for n in range(2):
        for p in range(6):
            assert "".join("-SB"[c] for c in t.route["shared/3"][n, p]) == rotated(3, n, p, "B", "S")
    skip = read_table(run_dir, "big,skip")
    assert skip.labels("causal") == [] and (skip.route["shared/1"] == SKIP).sum(-1).tolist() == [[1] * 6] * 2


def test_rows_in_any_order(tmp_path):
    write_oracle(tmp_path, "big,small", reverse=True)
    t = read_table(tmp_path, "big,small")
    assert t.text == TEXT and np.allclose(t.loss["all-small"], SMALL)


def test_parse_routes():
    assert parse_routes(["B-S", "SSB"], 3).tolist() == [[2, 0, 1], [1, 1, 2]]
    with pytest.raises(ValueError, match="'x'"):
        parse_routes(["BxS"], 3)
    with pytest.raises(ValueError, match="3 layers"):
        parse_routes(["BS"], 3)


def test_usage_is_a_fraction_over_sequences(run_dir):
    route = read_table(run_dir).route["shared/2"]  # token (n, t) takes BIG at layers n+t, n+t+1 (mod 4)
    frac = usage(route, BIG)
    assert frac.shape == (4, 6)
    assert frac[:, 0].tolist() == [0.5, 1.0, 0.5, 0.0]  # seq 0: BBSS, seq 1: SBBS
    assert frac[:, 1].tolist() == [0.0, 0.5, 1.0, 0.5]  # seq 0: SBBS, seq 1: SSBB
    hand = np.array([[np.mean([(l - n - t) % 4 < 2 for n in range(2)]) for t in range(6)] for l in range(4)])
    assert np.array_equal(frac, hand)


def test_spread_counts_tokens_and_averages_their_gain():
    B, S = BIG, 1  # 1: SMALL
    route = np.array([[[B, B, S], [S, S, S], [B, S, S], [B, B, B]]], dtype=np.uint8)  # 1 x 4 tokens x 3 layers: 2, 0, 1, 3 BIG
    gain = np.array([[0.4, 0.0, 0.2, 0.9]])
    share, mean = spread(route, gain)
    assert share.tolist() == [0.25, 0.25, 0.25, 0.25]
    assert np.allclose(mean, [0.0, 0.2, 0.4, 0.9])
    share, mean = spread(route[:, :3])  # no token takes 3; no gain given
    assert np.allclose(share, [1 / 3, 1 / 3, 1 / 3, 0.0]) and mean is None
    _, mean = spread(route[:, :3], gain[:, :3])
    assert np.isnan(mean[3]) and np.allclose(mean[:3], [0.0, 0.2, 0.4])


def test_missing_files_name_the_command(tmp_path, run_dir):
    with pytest.raises(DuoError, match="not a directory"):
        read_table(tmp_path / "nowhere")
    with pytest.raises(DuoError, match=r"big-small-skip/summary.json not found: run `duollm oracle --run .* --options big,small,skip`"):
        read_table(run_dir, "big,small,skip")
    (run_dir / "oracle" / "big-small" / "tokens.jsonl.gz").unlink()
    with pytest.raises(DuoError, match="tokens.jsonl.gz not found"):
        read_table(run_dir)
    with pytest.raises(DuoError, match="--options must be one of"):
        read_table(run_dir, "big")


def _rewrite(folder, edit):
    path = folder / "tokens.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in edit(rows))


def test_malformed_files(tmp_path):
    folder = write_oracle(tmp_path / "a", "big,small")
    (folder / "summary.json").write_text("{not json")
    with pytest.raises(DuoError, match="summary.json is not valid JSON"):
        read_summary(tmp_path / "a")
    (folder / "summary.json").write_text('{"options": "big,small"}')
    with pytest.raises(DuoError, match="lacks modes"):
        read_summary(tmp_path / "a")

    folder = write_oracle(tmp_path / "b", "big,small")
    (folder / "tokens.jsonl.gz").write_text("plain text")
    with pytest.raises(DuoError, match="not a readable gzip file"):
        read_table(tmp_path / "b")

    folder = write_oracle(tmp_path / "c", "big,small")
    _rewrite(folder, lambda rows: rows[:-1])
    with pytest.raises(DuoError, match="full .seq, pos. grid"):
        read_table(tmp_path / "c")

    folder = write_oracle(tmp_path / "d", "big,small")
    _rewrite(folder, lambda rows: [{**r, "route/shared/2": "BBXS"} for r in rows])
    with pytest.raises(DuoError, match="'X'"):
        read_table(tmp_path / "d")

    folder = write_oracle(tmp_path / "e", "big,small")
    _rewrite(folder, lambda rows: [{k: v for k, v in r.items() if k != "loss/all-small" or r["pos"] != 3} for r in rows])
    with pytest.raises(DuoError, match="lacks 'loss/all-small'"):
        read_table(tmp_path / "e")

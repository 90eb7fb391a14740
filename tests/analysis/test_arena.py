"""The arena's table and figure from saved rows (duollm/analysis/arena.py). Run: pytest tests/analysis/test_arena.py"""

import json

import pytest

from duollm.analysis.arena import pareto, read_arena, summarize, write_arena_figure
from duollm.errors import DuoError


def row(label, seed, prose, code, flops, **extra):
    return {"label": label, "method": label.split(":")[0], "seed": seed, "ppl": {"prose-val": prose, "code-val": code}, "flops_per_token": flops,
            "compute": flops / 100, "ffn_share": 1.0, "target": None, "tokens_per_s": 10.0, "train_tokens": 64, **extra}  # fmt: skip


ROWS = [row("dense", 0, 10.0, 20.0, 100), row("dense", 1, 12.0, 22.0, 100), row("small", 0, 11.0, 30.0, 50), row("bad", 0, 13.0, 31.0, 80)]


def test_summarize_means_over_seeds_with_standard_errors():
    points = summarize(ROWS)
    assert [p["label"] for p in points] == ["dense", "small", "bad"]
    dense = points[0]
    assert dense["seeds"] == [0, 1] and dense["ppl"]["prose-val"] == 11.0 and dense["ppl_se"]["prose-val"] == pytest.approx(1.0)
    assert points[1]["ppl_se"]["prose-val"] is None and dense["decode_tokens_per_s"] is None


def test_the_pareto_front_drops_the_beaten():
    front = pareto(summarize(ROWS), "flops_per_token", "prose-val")
    assert [p["label"] for p in front] == ["small"]  # dense (11.0 at 100) is not below small (11.0 at 50)
    assert [p["label"] for p in pareto(summarize(ROWS), "flops_per_token", "code-val")] == ["small", "dense"]


def test_read_and_draw(tmp_path):
    (tmp_path / "arena.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert read_arena(tmp_path) == ROWS
    assert write_arena_figure(tmp_path).stat().st_size > 0
    timed = [{**r, "decode_tokens_per_s": 100.0} for r in ROWS]
    (tmp_path / "arena.jsonl").write_text("".join(json.dumps(r) + "\n" for r in timed))
    assert summarize(read_arena(tmp_path))[0]["decode_tokens_per_s"] == 100.0 and write_arena_figure(tmp_path).is_file()
    (tmp_path / "arena.jsonl").write_text('{"label": "x"}\n')
    with pytest.raises(DuoError, match="not an arena row"):
        read_arena(tmp_path)
    with pytest.raises(DuoError, match="not found"):
        read_arena(tmp_path / "nowhere")

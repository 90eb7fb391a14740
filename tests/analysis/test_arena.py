"""The arena's table and figure from saved rows (duollm/analysis/arena.py). Run: pytest tests/analysis/test_arena.py"""

import json

import pytest

from duollm.analysis.arena import paired, pareto, read_arena, speed_ratios, summarize, write_arena_figure
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


def test_the_evaluations_of_one_training_share_a_color_and_a_front():
    """An exit method's thresholds (rows naming the training they share) are one family: one color, one legend entry,
    and a line along their own front (the beaten threshold off it)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from duollm.analysis.arena import plot_pareto

    exits = [row("exit:t=0.9", 0, 10.0, 20.0, 90), row("exit:t=0.5", 0, 12.0, 22.0, 60, shared_training="exit:t=0.9")]
    exits.append(row("exit:t=0.7", 0, 13.0, 23.0, 70, shared_training="exit:t=0.9"))  # beaten by t=0.5: off the front
    points = summarize(ROWS + exits)
    assert [p["family"] for p in points] == ["dense", "small", "bad", "exit:t=0.9", "exit:t=0.9", "exit:t=0.9"]
    ax_flops, ax_time = Figure().subplots(1, 2)
    plot_pareto(points, ax_flops, ax_time)
    assert len({p["color"] for p in points}) == 4 and points[3]["color"] == points[4]["color"] == points[5]["color"]
    labels = [t.get_text() for t in ax_flops.get_legend().get_texts()]
    assert labels == ["dense", "small", "bad", "exit:t=0.9 (+2 evaluations)"]
    family = [line for line in ax_flops.lines if line.get_color() == points[3]["color"] and line.get_linestyle() == "-"]
    fronts = sorted(tuple(round(x * 1e6) for x in line.get_xdata()) for line in family)  # MFLOP back to FLOPs
    assert fronts == [(60, 90), (60, 90)]  # one per split: t=0.7 is beaten


def lossy(label, method, seed, prose, compute, **extra):
    r = row(label, seed, 1.0, 1.0, compute * 100, **extra)
    return {**r, "method": method, "loss": {"prose-val": prose, "code-val": prose}}


def test_paired_differences_against_the_dense_entrant_of_nearest_compute():
    rows = [
        lossy("dense:budget=0.5", "dense", 0, 3.0, 0.73),
        lossy("dense:budget=0.5", "dense", 1, 3.2, 0.73),
        lossy("dense:budget=0.33", "dense", 0, 3.5, 0.63),
        lossy("mod", "mod", 0, 3.1, 0.72),  # nearest: dense:budget=0.5
        lossy("mod", "mod", 1, 3.5, 0.72),
        lossy("acm", "acm", 0, 3.4, 0.64),  # nearest: dense:budget=0.33, one seed in common
        lossy("acm", "acm", 1, 3.0, 0.64),
        {**lossy("dense:skipllm=0.9", "dense", 0, 3.3, 0.725), "options": {"skipllm": 0.9}},  # an entrant, not a baseline
    ]
    got = {d["label"]: d for d in paired(rows)}
    assert set(got) == {"mod", "acm", "dense:skipllm=0.9"}  # the plain dense entrants are the baselines
    assert got["dense:skipllm=0.9"]["baseline"] == "dense:budget=0.5"
    mod, acm = got["mod"], got["acm"]
    assert mod["baseline"] == "dense:budget=0.5" and mod["seeds"] == [0, 1]
    assert mod["diff"]["prose-val"] == pytest.approx(0.2) and mod["se"]["prose-val"] == pytest.approx(0.1)  # (0.1, 0.3)
    assert acm["baseline"] == "dense:budget=0.33" and acm["seeds"] == [0] and acm["se"]["prose-val"] is None
    assert acm["diff"]["prose-val"] == pytest.approx(-0.1)


def test_speed_ratios_stay_within_one_pass():
    timing = {
        "speed_train_tokens_per_s": 100.0,
        "prefill_tokens_per_s": 200.0,
        "decode_tokens_per_s": 10.0,
        "decode_tokens_per_s_b64": 50.0,
    }
    half = {k: v / 2 for k, v in timing.items()}
    rows = [
        lossy("dense:budget=0.5", "dense", 0, 3.0, 0.73, speed_pass="A", **timing),
        lossy("dense:budget=0.5", "dense", 1, 3.0, 0.73, speed_pass="B", **half),
        lossy("mod", "mod", 0, 3.0, 0.72, speed_pass="B", **timing),  # against the dense row timed in pass B
        lossy("acm", "acm", 0, 3.0, 0.72),  # not timed
    ]
    got = {(r["label"], r["seed"]): r for r in speed_ratios(rows)}
    assert set(got) == {("dense:budget=0.5", 0), ("dense:budget=0.5", 1), ("mod", 0)}
    assert got[("mod", 0)]["decode_tokens_per_s"] == pytest.approx(2.0) and got[("mod", 0)]["baseline"] == "dense:budget=0.5"
    assert got[("dense:budget=0.5", 0)]["prefill_tokens_per_s"] == pytest.approx(1.0)

"""Routers in the analysis: their files read into arrays, the comparison table's numbers, the router figures and
their notes, and malformed files named. Run: pytest tests/analysis/test_routers.py"""

import dataclasses
import gzip
import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from duollm.analysis.commands import TRAIN_DEFAULTS, router_commands
from duollm.analysis.plots import plot_ppl
from duollm.analysis.report import build_report, router_points
from duollm.analysis.report_routers import router_table
from duollm.analysis.routers import read_routers
from duollm.analysis.table import BIG, read_summary, read_table, usage
from duollm.cli import main
from duollm.errors import DuoError

from .conftest import GAIN, PAPER_LOSS, PAPER_ROUTES, SMALL, SUPERVISED_LOSS, SUPERVISED_ROUTES, oracle_loss, write_oracle, write_router

HALF = {"big": 0.5, "small": 0.5}


def table_rows(text: str) -> list[dict[str, str]]:
    """An HTML table of report.py as one {header: cell text} per row."""
    head = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", text)]
    rows = re.findall(r"<tr>(<td.*?)</tr>", text)
    return [dict(zip(head, (html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)), strict=True)) for r in rows]


def ppl(loss: np.ndarray) -> float:
    return math.exp(float(loss.mean()))


def test_read_routers(run_dir):
    paper, sup = read_routers(run_dir)
    assert (paper.name, paper.kind, paper.options, sup.name, sup.kind) == (
        "paper-0.5",
        "paper",
        "big,small",
        "supervised-0.5",
        "supervised",
    )
    assert paper.counts() == (2.0,) and paper.budget_label() == "2" and list(paper.evals) == ["synthetic-val"]
    ev = paper.evals["synthetic-val"]
    assert ev.loss.shape == (2, 6) and np.allclose(ev.loss, PAPER_LOSS) and ev.ppl == pytest.approx(ppl(PAPER_LOSS), rel=1e-5)
    assert ev.route.shape == (2, 6, 4) and ev.route.dtype == np.uint8 and ev.route[1, 0].tolist() == [BIG, 1, 1, 1]
    assert np.array_equal(ev.token, read_table(run_dir).token)
    assert usage(ev.route, BIG)[:, 0].tolist() == [1.0, 0.5, 0.0, 0.0]  # BBSS and BSSS
    assert ["".join("-SB"[c] for c in route) for route in sup.evals["synthetic-val"].route[0]] == SUPERVISED_ROUTES[0]
    summary = read_summary(run_dir)
    assert paper.matching_eval(summary) is ev and paper.matching_eval(read_summary(run_dir, "big,skip") | {"seqs": 3}) is None
    assert read_routers(run_dir / "nowhere") == []


def test_budget_labels(tmp_path):
    write_router(tmp_path, "a", "paper", {"skip": 0.25, "big": 0.75}, options="big,skip")
    write_router(tmp_path, "b", "paper", {"big": 0.3, "small": 0.7})
    write_router(tmp_path, "c", "paper", {"big": 0.5, "small": 0.25, "skip": 0.25}, options="big,small,skip")
    a, b, c = read_routers(tmp_path)
    assert (a.counts(), a.budget_label()) == ((1.0,), "1")
    assert b.counts() == pytest.approx((1.2,)) and b.budget_label() == "1.2"
    assert (c.counts(), c.budget_label()) == ((2.0, 1.0, 1.0), "2/1/1")
    assert all(r.evals == {} for r in (a, b, c))


def test_comparison_table_numbers(run_dir):
    routers, s = read_routers(run_dir), read_summary(run_dir)
    [row] = table_rows(router_table("big,small", [(r, e) for r in routers for e in r.evals.values()], s))
    fixed, causal = ppl(SMALL - 0.2), ppl(oracle_loss("2", 0.9))  # the fixture's fixed route and causal oracle at k = 2
    assert row["budget"] == "2" and row["routers"] == "paper: paper-0.5, supervised: supervised-0.5"
    assert row["all-small"] == f"{ppl(SMALL):.2f}" and row["all-big"] == f"{ppl(SMALL - 0.25):.2f}"
    assert row["fixed"] == f"{fixed:.2f}" and row["random best"] == f"{ppl(SMALL - 0.1):.2f}"
    assert row["oracle causal"] == f"{causal:.2f}" and row["oracle shared"] == f"{ppl(SMALL - GAIN / 2):.2f}"
    for kind, loss in (("paper", PAPER_LOSS), ("supervised", SUPERVISED_LOSS)):
        assert row[f"{kind} router"] == f"{ppl(loss):.2f}"
        gap = (fixed - ppl(loss)) / (fixed - causal)
        assert row[f"gap recovered, {kind}"] == f"{gap:.3f}"
    assert 0 < float(row["gap recovered, paper"]) < float(row["gap recovered, supervised"]) < 1
    assert row["realised big, paper"] == "0.375" and row["realised big, supervised"] == "0.500"


def test_table_rows_and_missing_values(run_dir):
    """Another supervised router at k = 2 makes a second row; one at 1.2 layers has no oracle row; off the oracle's
    windows every baseline is –; a router of options without an oracle still gets its table."""
    write_router(run_dir, "sup-shared", "supervised", HALF, SMALL - 0.1 * GAIN, SUPERVISED_ROUTES, config={"labels": "shared"})
    write_router(run_dir, "paper-0.3", "paper", {"big": 0.3, "small": 0.7}, SMALL - 0.05 * GAIN, PAPER_ROUTES)
    write_router(run_dir, "paper-0.5-other", "paper", HALF, PAPER_LOSS, PAPER_ROUTES, split="other-val")
    write_router(run_dir, "c", "paper", {"big": 0.5, "small": 0.25, "skip": 0.25}, SMALL, PAPER_ROUTES, options="big,small,skip")
    routers, s = read_routers(run_dir), read_summary(run_dir)
    evals = [(r, e) for r in routers if r.options == "big,small" for e in r.evals.values() if e.split == "synthetic-val"]
    rows = table_rows(router_table("big,small", evals, s))
    assert [(r["budget"], r["routers"]) for r in rows] == [
        ("1.2", "paper: paper-0.3 (gap against k = 1)"),  # `router eval` rounds 1.2 layers to k = 1 for its gap
        ("2", "paper: paper-0.5, supervised: sup-shared"),
        ("2", "supervised: supervised-0.5"),
    ]
    assert rows[0]["fixed"] == rows[0]["oracle causal"] == rows[0]["supervised router"] == "–"
    gap = (ppl(SMALL - 0.1) - ppl(SMALL - 0.05 * GAIN)) / (ppl(SMALL - 0.1) - ppl(oracle_loss("1", 0.9)))  # against k = 1
    assert rows[0]["gap recovered, paper"] == f"{gap:.3f}"
    assert rows[0]["all-small"] == f"{ppl(SMALL):.2f}" and rows[0]["paper router"] == f"{ppl(SMALL - 0.05 * GAIN):.2f}"
    assert rows[2]["paper router"] == rows[2]["gap recovered, paper"] == rows[2]["realised big, paper"] == "–"
    assert rows[2]["fixed"] == rows[1]["fixed"] == f"{ppl(SMALL - 0.2):.2f}"

    page = Path(build_report(str(run_dir))["report"]).read_text()
    tables = dict(re.findall(r"<h3>(big,small[^<]* on [^<]*)</h3>\n(?:<p>.*?</p>\n)?(<table>.*?</table>)", page))
    assert list(tables) == [
        "big,small on synthetic-val, 2 windows × 7 tokens",
        "big,small on other-val, 2 windows × 7 tokens",
        "big,small,skip on synthetic-val, 2 windows × 7 tokens",
    ]
    [other] = table_rows(tables["big,small on other-val, 2 windows × 7 tokens"])
    assert (
        other["paper router"] == f"{ppl(PAPER_LOSS):.2f}" and other["all-small"] == other["fixed"] == other["gap recovered, paper"] == "–"
    )
    [three] = table_rows(tables["big,small,skip on synthetic-val, 2 windows × 7 tokens"])
    assert three["budget"] == "2/1/1" and three["realised big/small/skip, paper"] == "0.375 / 0.625 / 0.000" and three["all-small"] == "–"
    assert "Not the oracle's windows (synthetic-val, 2 windows × 7 tokens)" in page and "No big,small,skip oracle" in page
    assert "duollm router eval --run" in page and "--name paper-0.5-other --split other-val --seqs 2 --seq-len 7" in page
    assert "--kind supervised --budget 0.5 --name sup-shared --steps 100 --labels shared" in page
    assert "--kind paper --budget 0.5 --options big,small,skip --name c --steps 100" in page


def test_router_points_and_ppl_legend(run_dir):
    write_oracle(run_dir / "b", "big,skip", modes=("shared",))
    write_router(run_dir / "b", "skip", "paper", {"skip": 0.25, "big": 0.75}, PAPER_LOSS, PAPER_ROUTES, options="big,skip")
    pts = router_points(read_routers(run_dir), read_summary(run_dir))
    assert [(p["x"], p["kind"], p["name"]) for p in pts] == [(2.0, "paper", "paper-0.5"), (2.0, "supervised", "supervised-0.5")]
    assert pts[0]["ppl"] == pytest.approx(ppl(PAPER_LOSS), rel=1e-5)
    assert router_points(read_routers(run_dir), read_summary(run_dir, "big,skip")) == []  # big,small routers only
    [skip] = router_points(read_routers(run_dir / "b"), read_summary(run_dir / "b", "big,skip"))
    assert (skip["x"], skip["name"]) == (1.0, "skip")

    from matplotlib.figure import Figure

    ax = plot_ppl(read_summary(run_dir), Figure().subplots(), pts)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels.count("paper router") == 1 and labels.count("supervised router") == 1


def test_report_draws_routers(run_dir):
    """An unevaluated router is listed with a note; the evaluated ones are drawn beside the oracle at their budget."""
    write_router(run_dir, "pb", "paper", HALF, config={"train_base": True, "steps": 20})
    write_router(run_dir, "skip-0.25", "paper", {"skip": 0.25, "big": 0.75}, PAPER_LOSS, [["B-BB"] * 6] * 2, options="big,skip")
    res = build_report(str(run_dir))
    assert {"routers-usage.png", "routers-spread.png", "routers-seq0.png"} <= set(res["figures"])
    assert all((run_dir / "report" / f).read_bytes()[:4] == b"\x89PNG" for f in res["figures"])
    page = Path(res["report"]).read_text()
    rows = table_rows(re.search(r"<h2>Learned routers</h2>\n(<table>.*?</table>)", page)[1])
    assert [(r["name"], r["evaluated on"]) for r in rows] == [
        ("paper-0.5", "synthetic-val (2 x 7)"),
        ("pb", "–"),
        ("skip-0.25", "synthetic-val (2 x 7)"),
        ("supervised-0.5", "synthetic-val (2 x 7)"),
    ]
    [skip] = table_rows(re.search(r"<h3>big,skip on [^<]*</h3>\n(<table>.*?</table>)", page)[1])
    assert skip["budget"] == "1" and skip["realised skip, paper"] == "0.250" and skip["fixed"] == f"{ppl(SMALL - 0.1):.2f}"
    assert re.findall(r'class="note">([^<]*)<', page) == ["router pb is not evaluated: run `duollm router eval --run RUN --name pb`"]
    assert "--kind paper --budget 0.5 --name pb --steps 20 --train-base" in page
    assert page.index("routers-usage.png") > page.index("<h2>Learned routers</h2>")


def test_router_off_the_oracle_windows_is_not_drawn(tmp_path):
    """Another split, or the oracle's split with other tokens: in the tables, not in the figures."""
    run = tmp_path / "run"
    write_oracle(run, "big,small")
    write_router(run, "paper-0.5", "paper", HALF, PAPER_LOSS, PAPER_ROUTES, split="other-val")
    res = build_report(str(run))
    assert not any(f.startswith("routers-") for f in res["figures"])
    assert "no router evaluated on an oracle&#x27;s windows" in Path(res["report"]).read_text()
    folder = write_router(run, "other-tokens", "paper", HALF, PAPER_LOSS, PAPER_ROUTES)  # the oracle's split, not its text
    _rewrite_tokens(folder, lambda rows: [{**r, "token": r["token"] + 1} for r in rows])
    res = build_report(str(run))
    assert not any(f.startswith("routers-") for f in res["figures"])
    assert "other-tokens/eval-synthetic-val.json does not hold the tokens of" in Path(res["report"]).read_text()


def _rewrite_tokens(folder: Path, edit) -> None:
    path = folder / "tokens-synthetic-val.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in edit(rows))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: (f / "eval-synthetic-val.json").write_text("{oops"), r"eval-synthetic-val.json is not valid JSON"),
        (
            lambda f: (f / "eval-synthetic-val.json").write_text('{"name": "paper-0.5"}'),
            r"eval-synthetic-val.json lacks target, realized, ppl",
        ),
        (lambda f: (f / "tokens-synthetic-val.jsonl.gz").unlink(), r"tokens-synthetic-val.jsonl.gz not found"),
        (
            lambda f: _rewrite_tokens(f, lambda rows: rows[:6]),
            r"tokens-synthetic-val.jsonl.gz holds 1 x 6 tokens, eval-synthetic-val.json says 2 x 6",
        ),
        (
            lambda f: _rewrite_tokens(f, lambda rows: [{**r, "route": "BBX"} for r in rows]),
            r"tokens-synthetic-val.jsonl.gz: malformed value",
        ),
        (lambda f: _rewrite_tokens(f, lambda rows: [{k: v for k, v in r.items() if k != "loss"} for r in rows]), r"lacks 'loss'"),
        (lambda f: (f / "router.json").write_text('{"kind": "paper"}'), r"router.json lacks name, options_flag, target, n_layer"),
    ],
)
def test_malformed_router_files_are_named(run_dir, capsys, edit, message):
    edit(run_dir / "routers" / "paper-0.5")
    with pytest.raises(DuoError, match=rf"routers/paper-0.5/.*{message}"):
        read_routers(run_dir)
    assert main(["report", "--run", str(run_dir)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "paper-0.5" in err and "duollm router" in err
    assert not (run_dir / "report").exists()


def test_router_commands(run_dir):
    paper = read_routers(run_dir)[0]
    assert router_commands("R", paper, read_summary(run_dir)) == [
        "duollm router train --run R --kind paper --budget 0.5 --steps 100",
        "duollm router eval --run R --name paper-0.5",
    ]


def test_train_defaults_agree_with_the_command():
    router = pytest.importorskip("duollm.train.router_spec")  # imports torch; analysis itself does not
    fields = {f.name: f.default for f in dataclasses.fields(router.RouterTrainSpec) if f.name not in ("run", "json")}
    assert TRAIN_DEFAULTS == fields


def test_a_budget_a_hair_from_whole_layers_is_those_layers(tmp_path):
    """0.333 of 12 layers is the oracle's k = 4 (3.996 layers), not a budget of its own; 1.2 layers stays 1.2."""
    from duollm.analysis.routers import whole_layers

    assert whole_layers(0.333 * 12) == 4 and whole_layers(0.667 * 12) == 8 and whole_layers(6.0) == 6
    assert whole_layers(1.2) is None and whole_layers(0.3 * 12) is None  # 3.6
    write_router(tmp_path, "third", "paper", {"big": 0.333, "small": 0.667})
    (r,) = read_routers(tmp_path)
    r.info["n_layer"] = 12
    assert r.budget_label() == "4"


def test_an_eval_at_another_precision_is_no_match(run_dir):
    """A router scored at bf16 is not compared with an fp32 oracle, and its report line says --dtype."""
    summary = read_summary(run_dir, "big,small")
    paper = read_routers(run_dir)[0]
    assert (
        paper.matching_eval(summary) is not None
        and router_commands("R", paper, summary)[1] == "duollm router eval --run R --name paper-0.5"
    )
    ev = next(iter(paper.evals.values()))
    ev.result["dtype"] = "bf16"
    assert paper.matching_eval(summary) is None and router_commands("R", paper, summary)[1].endswith(" --dtype bf16")
    assert paper.matching_eval({**summary, "dtype": "bf16"}) is ev


def test_router_commands_give_a_shrunk_layer_head_its_flags(tmp_path):
    """A boolean flag set in the saved config (`--shrink`) comes back as the bare flag, after the flags it needs; a
    number (`--tune`) with its value."""
    folder = tmp_path / "routers" / "head"
    folder.mkdir(parents=True)
    config = {**TRAIN_DEFAULTS, "kind": "supervised", "head": "layer", "values": "mean", "shrink": True, "tune": 1000, "labels": "shared"}
    info = {
        "kind": "supervised",
        "name": "head",
        "budget": "0.5",
        "options_flag": "big,small",
        "options": ["small", "big"],
        "config": config,
    }
    info.update(target={"big": 0.5, "small": 0.5}, n_layer=2)
    (folder / "router.json").write_text(json.dumps(info))
    (router,) = read_routers(tmp_path)
    assert router_commands("R", router, None)[0] == (
        "duollm router train --run R --kind supervised --budget 0.5 --name head --labels shared --head layer --values mean --shrink --tune 1000"
    )

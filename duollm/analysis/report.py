"""`duollm report`: one HTML page with every figure of a run, rebuilt from its saved files alone.

    duollm report --run RUN          # → RUN/report/report.html and its PNG figures

It reads `RUN/oracle/<options>/` (from `duollm oracle`), `RUN/routers/<name>/` (from `duollm router train`
and `duollm router eval`) and `RUN/difficulty/summary.json` (from `duollm difficulty`, for its settings; the
measures are computed again from the oracle table with the same code), never a model. A figure whose data is
absent is left out with a note saying which command makes it:
  ppl-<options>.png   perplexity against the budget (integer budgets), oracles and baselines, and the routers
                      evaluated on the oracle's windows at x = target fraction x L; plus a table of every
                      budget, `free` and schedules included
  usage-big-small.png fraction of sequences taking BIG at each (layer, position) for k ≈ L/3, L/2, 2L/3
  skip-map.png        fraction taking SKIP, big-skip oracle with L//2 layers skipped
  routes-seq0.png     the oracle routes of sequence 0, token by token, at k = L//2 BIG layers
  routers-usage.png   per router evaluated on the oracle's windows: fraction taking BIG (SKIP for big,skip) at
                      each (layer, position), above the oracles' at the same budget; with every router listed
                      and a table per options and evaluated windows: baselines, routers, oracles, gap recovered
  routers-spread.png  per router: the share of tokens taking 0..L BIG (SKIP) layers, and for big,small the mean gain
                      of all-big over all-small on the tokens of each count
  routers-seq0.png    the routes of sequence 0 of those routers, below the oracles' at the same budget
  difficulty.png      D_rel against D_conv, with highlighted text and the top tokens in the page
The page and figures are written into a temporary folder that then replaces `RUN/report/`.
"""

from __future__ import annotations

import html
import json
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from duollm.analysis import difficulty as diff
from duollm.analysis.plots import plot_difficulty, plot_ppl, plot_route_map, plot_spread, plot_usage
from duollm.analysis.routers import COUNTED, KINDS, Router, RouterEval, read_routers, window_key
from duollm.analysis.table import (
    BIG,
    OPTIONS,
    SKIP,
    OracleTable,
    options_present,
    oracle_folder,
    read_summary,
    read_table,
    spread,
    usage,
    usage_ks,
)
from duollm.errors import DuoError
from duollm.extras import require
from duollm.files import atomic_folder

esc = html.escape
N_HIGHLIGHT = 3  # sequences shown as highlighted text
CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f0f0f0}td.l{text-align:left;font-family:monospace}figure{margin:1em 0}img{max-width:100%}
figcaption{font-size:13px;color:#555}.note{color:#a33;font-style:italic}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
.text{white-space:pre-wrap;font-family:monospace;font-size:13px;border:1px solid #ddd;padding:.5em;margin:.4em 0;line-height:1.6}"""


@dataclass
class ReportCommand:
    """An HTML report of a run: every figure rebuilt from the run's saved oracle and difficulty files."""

    run: str  # run directory with oracle results (from duollm oracle)
    json: bool = False  # print one JSON object instead of a line


@dataclass
class Page:
    """The HTML being built and the PNG figures written beside it."""

    out: Path  # folder for report.html and the PNGs
    parts: list[str] = field(default_factory=list)  # HTML pieces, in order
    figures: list[str] = field(default_factory=list)  # PNG file names, in order

    def add(self, text: str) -> None:
        self.parts.append(text)

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{esc(text)}</p>')

    def figure(self, fig, name: str, caption: str) -> None:
        with warnings.catch_warnings():  # a token text in a script the font lacks only loses its glyphs
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(self.out / name, dpi=100, bbox_inches="tight")
        self.figures.append(name)
        self.parts.append(f'<figure><img src="{esc(name)}" alt="{esc(name)}"><figcaption>{esc(caption)}</figcaption></figure>')


def budget_list(labels: list[str]) -> str:
    """Budget labels as `duollm oracle --budgets` takes them, runs of counts joined: 0,1,2,free → 0-2,free."""
    items: list = []
    for lab in labels:
        if lab.isdigit() and items and isinstance(items[-1], list) and int(lab) == items[-1][1] + 1:
            items[-1][1] = int(lab)
        else:
            items.append([int(lab), int(lab)] if lab.isdigit() else lab)
    return ",".join(x if isinstance(x, str) else f"{x[0]}-{x[1]}" if x[1] > x[0] else str(x[0]) for x in items)


def source_flag(split: str) -> str:
    """` --split NAME` for a built-in split, ` --data PATH` for a user's file or folder."""
    return f" --data {shlex.quote(split)}" if "/" in split or Path(split).suffix else f" --split {shlex.quote(split)}"


def oracle_command(run: str, s: dict) -> str:
    """The `duollm oracle` command line that writes a folder like the one summarised by `s`."""
    q = shlex.quote
    cmd = f"duollm oracle --run {q(run)} --options {s['options']} --budgets {q(budget_list([str(r['k']) for r in s['budgets']]))}"
    cmd += f" --mode {s.get('mode', 'shared')}"
    causal = [str(r["k"]) for r in s["budgets"] if "ppl_oracle_causal" in r]
    if s.get("mode") == "causal" and len(causal) < len(s["budgets"]):
        cmd += f" --causal-budgets {q(budget_list(causal))}"
    rand = [str(r["k"]) for r in s["budgets"] if r.get("ppl_random_best") is not None]
    if s.get("random") and len(rand) < len(s["budgets"]):
        cmd += f" --random-budgets {q(budget_list(rand))}"
    for key in ("random", "seqs", "seq_len"):
        if key in s:
            cmd += f" --{key.replace('_', '-')} {s[key]}"
    if s.get("pick", "first") != "first":
        cmd += f" --pick {s['pick']}"
    split = str(s.get("split", ""))
    if split:
        cmd += source_flag(split)
    if s.get("seed", 0):
        cmd += f" --seed {s['seed']}"
    if s.get("dtype", "fp32") != "fp32":
        cmd += f" --dtype {s['dtype']}"
    return cmd


# the defaults of RouterTrainCommand (duollm/train/router.py), repeated since analysis imports no torch code;
# tests/analysis/test_routers.py checks that they agree
TRAIN_DEFAULTS = {
    "kind": "paper",
    "budget": "0.5",
    "options": "big,small",
    "name": "",
    "steps": 300,
    "lr": 1e-2,
    "batch_size": 16,
    "alpha": 10.0,
    "beta_max": 20.0,
    "train_base": False,
    "labels": "causal",
    "head": "route",
    "values": "flip",
    "shrink": False,
    "tune": 0,
    "label_seqs": 64,
    "label_batch_size": 64,
    "calib_seqs": 16,
    "seq_len": 0,
    "dtype": "fp32",
    "seed": 0,
}


def router_commands(run: str, r: Router, summary: dict | None) -> list[str]:
    """The `duollm router train` line that makes router `r` and a `duollm router eval` line per evaluation."""
    q = shlex.quote
    saved = r.info.get("config")
    cfg = {
        **TRAIN_DEFAULTS,
        **(saved if isinstance(saved, dict) else {}),
        "kind": r.kind,
        "budget": str(r.info.get("budget", "")),
        "options": r.options,
    }
    cmd = f"duollm router train --run {q(run)} --kind {q(r.kind)} --budget {q(cfg['budget'])}"
    cmd += "" if r.options == "big,small" else f" --options {r.options}"
    default_name = f"{r.kind}-{cfg['budget']}" + ("" if r.options == "big,small" else f"-{r.options.replace(',', '-')}")
    cmd += "" if r.name == default_name else f" --name {q(r.name)}"
    for key, default in TRAIN_DEFAULTS.items():
        if key in ("kind", "budget", "options", "name") or cfg[key] == default:
            continue
        cmd += f" --{key.replace('_', '-')}" + ("" if isinstance(default, bool) else f" {q(str(cfg[key]))}")
    cmds = [cmd]
    for ev in r.evals.values():
        line = f"duollm router eval --run {q(run)} --name {q(r.name)}"
        if not ev.same_windows(summary):  # `router eval` takes the oracle's windows unless told otherwise
            line += source_flag(ev.split) + f" --seqs {ev.result['seqs']} --seq-len {ev.result['seq_len']}"
            line += f" --pick {ev.result['pick']}" if ev.result.get("pick", "first") != "first" else ""
        default = (summary or {}).get("dtype", "fp32") if ev.same_windows(summary) else "fp32"  # `router eval` follows the oracle's
        line += f" --dtype {ev.result['dtype']}" if ev.result.get("dtype", default) != default else ""
        cmds.append(line)
    return cmds


def _new_figure(width: float, height: float):
    require("analysis", "duollm report")
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no GUI backend

    return Figure(figsize=(width, height))


def _cell(v) -> str:
    return "–" if v is None else f"{v:.2f}" if isinstance(v, float) else esc(str(v))


def budget_table(s: dict) -> str:
    """Every budget of one oracle folder as an HTML table."""
    modes = s["modes"]
    head = ["budget", "routes", *(f"oracle {m}" for m in modes), "fixed", "random best", "fixed route"]
    rows = [f"<tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr>"]
    for r in s["budgets"]:
        fixed = r.get("fixed_route", "")
        if isinstance(fixed, list):  # a schedule: one route per position
            fixed = f"{fixed[0]} … {fixed[-1]} (per position)" if fixed else ""
        vals = [r["k"], r.get("n_routes"), *(r.get(f"ppl_oracle_{m}") for m in modes), r.get("ppl_fixed"), r.get("ppl_random_best")]
        rows.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in vals) + f'<td class="l">{esc(str(fixed))}</td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def router_points(routers: list[Router], s: dict) -> list[dict]:
    """The routers of the options of summary `s` evaluated on its windows, as points of `plot_ppl`."""
    pts = []
    for r in routers:
        ev = r.matching_eval(s) if r.options == s["options"] else None
        if ev is not None:
            pts.append({"x": r.counts()[0], "ppl": ev.ppl, "kind": r.kind, "name": r.name})
    return pts


def label_free_points(run: str, s: dict) -> list[dict]:
    """The label-free choices (`scripts/label_free.py --json` output saved as RUN/label-free-*.jsonl) made on the
    windows, and at the precision, of the big/small oracle summarised by `s`, as points of `plot_ppl`."""
    if s["options"] != "big,small":
        return []
    pts = []
    for f in sorted(Path(run).glob("label-free-*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                if window_key(row) == window_key(s) and row.get("dtype", "fp32") == s.get("dtype", "fp32"):
                    pts.append({"x": int(row["k"]), "ppl": float(row["ppl_label_free"]), "kind": "label-free", "name": "label-free"})
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise DuoError(
                    f"{f} holds a line that is not a label-free result ({line[:60]!r}); run scripts/label_free.py --json again"
                ) from None
    return pts


def _ppl_section(page: Page, summaries: dict[str, dict], routers: list[Router], run: str) -> None:
    page.add("<h2>Perplexity against the budget</h2>")
    for options, s in summaries.items():
        page.add(f"<h3>{esc(options)}</h3>")
        if any(isinstance(r["k"], int) for r in s["budgets"]) and options != "big,small,skip":
            fig = _new_figure(6, 4)
            pts = router_points(routers, s) + label_free_points(run, s)
            plot_ppl(s, fig.subplots(), pts)
            what = "BIG" if options == "big,small" else "SKIP"
            page.figure(
                fig,
                f"ppl-{options.replace(',', '-')}.png",
                f"Perplexity against the number of {what} layers per token: oracles, the best fixed route, best-of-N random, and the all-big / all-small models"
                + (f"; learned routers at their target ({', '.join(p['name'] for p in pts)})." if pts else ".")
                + (
                    " The label-free choice takes, per token, the route whose prediction is closest to all-big's, without"
                    " the label: about the most a router could reach."
                    if any(p["kind"] == "label-free" for p in pts)
                    else ""
                ),
            )
        else:
            page.note(f"no integer budgets for {options}: only the table below")
        page.add(budget_table(s))
        page.add(f"<p>{s.get('tokens', '?')} tokens; {s.get('seconds', '?')} s.</p>")


def _usage_section(page: Page, tables: dict[str, OracleTable]) -> None:
    page.add("<h2>Where the big module is used</h2>")
    t = tables.get("big,small")
    if t is None:
        page.note("no big,small oracle: run `duollm oracle --run RUN --options big,small`")
        return
    ks = [k for k in usage_ks(t.n_layer) if f"shared/{k}" in t.route]
    modes = [m for m in ("shared", "causal") if any(f"{m}/{k}" in t.route for k in ks)]
    if not ks:
        page.note(f"no shared oracle routes for k in {usage_ks(t.n_layer)} BIG layers: add them to `duollm oracle --budgets`")
        return
    fig = _new_figure(4.2 * len(ks), 2.8 * len(modes))
    axes = fig.subplots(len(modes), len(ks), squeeze=False)  # (modes, ks) Axes
    for i, m in enumerate(modes):
        for j, k in enumerate(ks):
            if f"{m}/{k}" in t.route:
                plot_usage(usage(t.route[f"{m}/{k}"], BIG), axes[i, j], f"{m} oracle, k = {k} BIG")
            else:
                axes[i, j].axis("off")
    fig.tight_layout()
    page.add(f"<p>k used: {', '.join(map(str, ks))} BIG layers of {t.n_layer} (≈ L/3, L/2, 2L/3); modes: {', '.join(modes)}.</p>")
    page.figure(fig, "usage-big-small.png", "Fraction of sequences whose oracle route takes the BIG module at each layer and position.")


def _skip_section(page: Page, tables: dict[str, OracleTable]) -> None:
    page.add("<h2>Which layers are skipped</h2>")
    t = tables.get("big,skip")
    if t is None:
        page.note("no big,skip oracle: run `duollm oracle --run RUN --options big,skip`")
        return
    s = t.n_layer // 2
    if f"shared/{s}" not in t.route:
        page.note(f"no big,skip shared oracle with {s} skipped layers: add {s} to `duollm oracle --run RUN --options big,skip --budgets`")
        return
    fig = _new_figure(7, 3)
    plot_usage(usage(t.route[f"shared/{s}"], SKIP), fig.subplots(), f"shared oracle, {s} of {t.n_layer} layers skipped", "skip")
    page.figure(
        fig, "skip-map.png", f"Fraction of sequences that skip each layer at each position when {s} of {t.n_layer} layers are skipped."
    )


def _route_section(page: Page, tables: dict[str, OracleTable]) -> None:
    page.add("<h2>The routes of one sequence</h2>")
    t = tables.get("big,small")
    if t is None:
        page.note("no big,small oracle: run `duollm oracle --run RUN --options big,small`")
        return
    k = t.n_layer // 2
    modes = [m for m in ("shared", "causal") if f"{m}/{k}" in t.route]
    if not modes:
        page.note(f"no oracle routes with k = {k} BIG layers: add {k} to `duollm oracle --budgets`")
        return
    P = len(t.text[0])
    fig = _new_figure(min(24.0, max(7.0, 0.16 * P)), 2.2 * len(modes) + 1.0)
    axes = fig.subplots(len(modes), 1, squeeze=False)[:, 0]  # (modes,) Axes
    for ax, m in zip(axes, modes, strict=True):
        plot_route_map(t.route[f"{m}/{k}"][0], t.text[0], ax, f"{m} oracle, k = {k} BIG, sequence 0")
    fig.tight_layout()
    page.figure(fig, "routes-seq0.png", f"Choice of every layer (rows) for every token of sequence 0 (columns), k = {k} BIG layers.")


def _num(v, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def _kind_order(kind: str) -> tuple[int, str]:
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), kind)


def _gap_k(ev: RouterEval, label: str) -> str:
    """`router eval` rounds the target to whole layers for its gap: say so where that is not the row's budget."""
    k = ev.result.get("k")
    return "" if k is None or str(k) == label else f" (gap against k = {k})"


def router_table(options: str, evals: list[tuple[Router, RouterEval]], summary: dict | None) -> str:
    """Routers of one options folder evaluated on the same windows, a row per budget (more where a kind has
    several routers): baselines and oracles from `summary` (None: not the oracle's windows, shown as –), the
    routers' perplexity, gap recovered and realised fractions from their eval JSON. A target of fractional
    layers (1.2) has no oracle row."""
    kinds = [*KINDS, *sorted({r.kind for r, _ in evals} - set(KINDS))]
    counted = COUNTED[options]
    head = ["budget", "all-small", "all-big", "fixed", "random best", *(f"{k} router" for k in kinds), "oracle causal", "oracle shared"]
    head += [f"gap recovered, {k}" for k in kinds] + [f"realised {'/'.join(counted)}, {k}" for k in kinds] + ["routers"]
    rows = [f"<tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr>"]
    by_label: dict[str, dict[str, list]] = {}
    for r, ev in sorted(evals, key=lambda x: (x[0].counts(), x[0].name)):
        by_label.setdefault(r.budget_label(), {}).setdefault(r.kind, []).append((r, ev))
    for label, by_kind in by_label.items():
        b = next((b for b in summary["budgets"] if str(b["k"]) == label), {}) if summary else {}
        base = [
            summary and summary.get("ppl_all_small"),
            summary and summary.get("ppl_all_big"),
            b.get("ppl_fixed"),
            b.get("ppl_random_best"),
        ]
        for i in range(max(len(v) for v in by_kind.values())):
            pick = [by_kind[k][i] if i < len(by_kind.get(k, [])) else None for k in kinds]  # (router, eval) or None per kind
            cells = [esc(label), *(_num(v) for v in base), *(_num(x and x[1].ppl) for x in pick)]
            cells += [_num(b.get("ppl_oracle_causal")), _num(b.get("ppl_oracle_shared"))]
            cells += [_num(x and x[1].result.get("gap_recovered"), ".3f") for x in pick]
            cells += ["–" if x is None else " / ".join(f"{x[1].result['realized'].get(c, 0.0):.3f}" for c in counted) for x in pick]
            names = ", ".join(f"{x[0].kind}: {x[0].name}{_gap_k(x[1], label)}" for x in pick if x)
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f'<td class="l">{esc(names)}</td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def router_list(routers: list[Router]) -> str:
    """Every router found, evaluated or not, as an HTML table."""
    head = ["name", "kind", "class", "options", "budget", "target", "train steps", "train s", "evaluated on"]
    rows = [f"<tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr>"]
    for r in routers:
        target = ", ".join(f"{c} {v:g}" for c, v in r.info["target"].items())
        train = r.info.get("train", {})
        evs = ", ".join(f"{e.split} ({e.result['seqs']} x {e.result['seq_len']})" for e in r.evals.values()) or "–"
        vals = [
            r.name,
            r.kind,
            r.info.get("class", "–"),
            r.options,
            r.info.get("budget", "–"),
            target,
            train.get("steps"),
            train.get("seconds"),
            evs,
        ]
        rows.append("<tr>" + "".join(f'<td class="l">{_cell(v)}</td>' for v in vals) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _windows_text(res: dict) -> str:
    return f"{res['split']}, {res['seqs']} windows × {res['seq_len']} tokens"


def _router_tables(page: Page, summaries: dict[str, dict], routers: list[Router]) -> None:
    groups: dict[tuple, list[tuple[Router, RouterEval]]] = {}
    for o in OPTIONS:
        s = summaries.get(o)
        evals = [(r, e) for r in routers if r.options == o for e in r.evals.values()]
        for r, e in sorted(evals, key=lambda x: (not x[1].same_windows(s), str(window_key(x[1].result)))):
            groups.setdefault((o, *window_key(e.result)), []).append((r, e))
    for (o, *_), evals in groups.items():
        s = summaries.get(o)
        same = evals[0][1].same_windows(s)
        page.add(f"<h3>{esc(o)} on {esc(_windows_text(evals[0][1].result))}</h3>")
        if s is None:
            page.add(f"<p>No {esc(o)} oracle: run `duollm oracle --run RUN --options {esc(o)}` for the baselines and oracles.</p>")
        elif not same:
            page.add(f"<p>Not the oracle's windows ({esc(_windows_text(s))}): no baselines or oracles to compare with.</p>")
        page.add(router_table(o, evals, s if same else None))


def _router_figures(page: Page, summaries: dict[str, dict], tables: dict[str, OracleTable], routers: list[Router]) -> None:
    drawn: list[tuple[Router, RouterEval, OracleTable]] = []
    for r in sorted(routers, key=lambda r: (OPTIONS.index(r.options), r.counts(), _kind_order(r.kind), r.name)):
        ev = r.matching_eval(summaries.get(r.options))
        if ev is None:
            continue
        t = tables[r.options]
        if ev.token.shape != t.token.shape or not np.array_equal(ev.token, t.token) or r.n_layer != t.n_layer:
            page.note(f"{ev.path} does not hold the tokens of {t.folder}: router {r.name} not drawn")
            continue
        drawn.append((r, ev, t))
    if not drawn:
        page.note(
            "no router evaluated on an oracle's windows: run `duollm router eval --run RUN --name NAME` (it takes the oracle's windows)"
        )
        return
    modes = [m for m in ("shared", "causal") if any(f"{m}/{r.budget_label()}" in t.route for r, _, t in drawn)]
    fig = _new_figure(4.2 * len(drawn), 2.8 * (1 + len(modes)))
    axes = fig.subplots(1 + len(modes), len(drawn), squeeze=False)  # (1 + modes, routers) Axes
    for j, (r, ev, t) in enumerate(drawn):
        label, (choice, what) = r.budget_label(), (SKIP, "skip") if r.options == "big,skip" else (BIG, "big")
        real = ev.result["realized"].get(what, 0.0)
        plot_usage(usage(ev.route, choice), axes[0, j], f"{r.kind} router {r.name} ({real:.2f} {what})", what)
        for i, m in enumerate(modes, 1):
            if f"{m}/{label}" in t.route:
                plot_usage(usage(t.route[f"{m}/{label}"], choice), axes[i, j], f"{m} oracle {r.options}, k = {label}", what)
            else:
                axes[i, j].axis("off")
    fig.tight_layout()
    page.figure(
        fig,
        "routers-usage.png",
        "Fraction of sequences taking BIG (SKIP for big,skip) at each layer and position: each router (top row) and the "
        "oracles at the same budget, k = target fraction × L (rows below).",
    )
    fig = _new_figure(4.2 * len(drawn), 3.0)
    for ax, (r, ev, t) in zip(fig.subplots(1, len(drawn), squeeze=False)[0], drawn, strict=True):
        choice, what = (SKIP, "skip") if r.options == "big,skip" else (BIG, "big")
        gain = t.loss["all-small"] - t.loss["all-big"] if r.options == "big,small" else None
        plot_spread(*spread(ev.route, gain, choice), ax, f"{r.kind} router {r.name}", what)
    fig.tight_layout()
    page.figure(
        fig,
        "routers-spread.png",
        "How each router spreads its budget over tokens: the share of tokens taking 0, 1, ... BIG (SKIP) layers, and, "
        "for big/small, the mean gain of all-big over all-small on the tokens of each count holding 0.5% of them or more "
        "(right axis). A router that gives more BIG layers to the tokens where BIG helps most has a rising line.",
    )
    maps: list[tuple[np.ndarray, str]] = []  # (T-1, L) routes of sequence 0 and their titles
    for key in dict.fromkeys((r.options, r.budget_label()) for r, _, _ in drawn):
        t = next(t for r, _, t in drawn if (r.options, r.budget_label()) == key)
        maps += [(t.route[f"{m}/{key[1]}"][0], f"{m} oracle {key[0]}, k = {key[1]}") for m in modes if f"{m}/{key[1]}" in t.route]
        maps += [(ev.route[0], f"{r.kind} router {r.name}") for r, ev, _ in drawn if (r.options, r.budget_label()) == key]
    text = drawn[0][2].text[0]
    fig = _new_figure(min(24.0, max(7.0, 0.16 * len(text))), 2.2 * len(maps) + 1.0)
    for ax, (route, title) in zip(fig.subplots(len(maps), 1, squeeze=False)[:, 0], maps, strict=True):
        plot_route_map(route, text, ax, f"{title}, sequence 0")
    fig.tight_layout()
    page.figure(
        fig,
        "routers-seq0.png",
        "Choice of every layer (rows) for every token of sequence 0 (columns): each router below the oracles at its budget.",
    )


def _router_section(page: Page, summaries: dict[str, dict], tables: dict[str, OracleTable], routers: list[Router]) -> None:
    page.add("<h2>Learned routers</h2>")
    if not routers:
        page.note(
            "no routers: train one with `duollm router train --run RUN --kind paper --budget 0.5`, then `duollm router eval --run RUN --name paper-0.5`"
        )
        return
    page.add(router_list(routers))
    for r in routers:
        if not r.evals:
            page.note(f"router {r.name} is not evaluated: run `duollm router eval --run RUN --name {r.name}`")
    page.add(
        "<p>Per options and evaluated windows, a row per budget k = target fraction × L. Gap recovered (from "
        "<code>duollm router eval</code>) = (ppl fixed − ppl router) / (ppl fixed − ppl causal oracle): 0 is the best "
        "fixed route, 1 the causal oracle. Realised: the fraction of (token, layer) choices taken.</p>"
    )
    _router_tables(page, summaries, routers)
    _router_figures(page, summaries, tables, routers)


def _highlight(table: OracleTable, values: np.ndarray, rgb: str) -> str:
    """The first sequences' text, each token's background in proportion to its value, full at the 98th percentile
    of the values shown (so that one outlier does not pale the rest); negative values get none."""
    shown = values[:N_HIGHLIGHT]  # (n, T-1)
    vmax = max(float(np.percentile(shown, 98)), 1e-9)
    out = []
    for n in range(shown.shape[0]):
        spans = [
            f'<span title="{v:.3f}" style="background:rgba({rgb},{min(max(v / vmax, 0.0), 1.0):.2f})">{esc(text)}</span>'
            for v, text in zip(shown[n].tolist(), table.text[n], strict=True)
        ]
        out.append(f'<div class="text">{"".join(spans)}</div>')
    return "".join(out)


def top_table(rows: list[dict]) -> str:
    head = "<tr><th>D_rel</th><th>D_conv</th><th>seq</th><th>pos</th><th>context [token]</th></tr>"
    body = "".join(
        f"<tr><td>{r['d_rel']:.3f}</td><td>{r['d_conv']:.3f}</td><td>{r['seq']}</td><td>{r['pos']}</td>"
        f'<td class="l">{esc(r["context"])}<b>[{esc(r["text"])}]</b></td></tr>'
        for r in rows
    )
    return f"<table>{head}{body}</table>"


DIFFICULTY_KEYS = ("options", "mode", "budget", "top", "context")


def difficulty_settings(run: str) -> dict:
    """options, mode, budget, top, context of RUN/difficulty/summary.json, or the defaults of `duollm difficulty`."""
    saved, default = diff.read_summary(run) or {}, diff.DifficultyCommand(run)
    return {k: saved.get(k, getattr(default, k)) for k in DIFFICULTY_KEYS}


def _difficulty_section(page: Page, run: str, tables: dict[str, OracleTable], st: dict) -> None:
    page.add("<h2>Token difficulty</h2>")
    try:
        t = tables.get(st["options"]) or read_table(run, st["options"])
        s = diff.measure(t, st["mode"], str(st["budget"]), int(st["top"]), int(st["context"]))
    except (ValueError, TypeError) as e:  # DuoError included: a missing folder or column
        page.note(f"no difficulty: {e}")
        return
    d_conv, d_rel = diff.difficulty(t, st["mode"], str(st["budget"]))
    page.add(
        f"<p>Oracle {esc(st['mode'])}/{esc(str(st['budget']))} of {esc(st['options'])}, {s['tokens']} tokens: "
        f"mean D_conv {s['mean_d_conv']:.3f}, mean D_rel {s['mean_d_rel']:.3f}. "
        "D_conv = loss(all-small); D_rel = loss(all-small) − loss(oracle).</p>"
    )
    fig = _new_figure(5, 4)
    plot_difficulty(d_conv, d_rel, fig.subplots(), s["spearman"], s["pearson"])
    page.figure(
        fig,
        "difficulty.png",
        "Relative difficulty (what the oracle gains) against conventional difficulty (the small model's loss), one point per token.",
    )
    n = min(N_HIGHLIGHT, len(t.text))
    page.add(f"<h3>D_rel of the first {n} sequences</h3><p>Background ∝ D_rel, full at its 98th percentile; hover for the value.</p>")
    page.add(_highlight(t, d_rel, "217,95,2"))
    page.add(f"<h3>D_conv of the first {n} sequences</h3><p>Background ∝ D_conv, full at its 98th percentile.</p>")
    page.add(_highlight(t, d_conv, "33,102,172"))
    page.add(f"<h3>Top {s['top']} tokens by D_rel</h3>" + top_table(s["top_rel"]))
    page.add(f"<h3>Top {s['top']} tokens by D_conv</h3>" + top_table(s["top_conv"]))


def _header(page: Page, run: str, summaries: dict[str, dict], st: dict, routers: list[Router]) -> None:
    first = next(iter(summaries.values()))
    name = Path(run).resolve().name
    page.add(f"<!doctype html><html><head><meta charset='utf-8'><title>duollm report: {esc(name)}</title><style>{CSS}</style></head><body>")
    page.add(f"<h1>duollm report: {esc(name)}</h1>")
    page.add(
        f"<p>Split <b>{esc(str(first.get('split', '?')))}</b>: {first.get('seqs', '?')} windows × {first.get('seq_len', '?')} tokens "
        f"({first.get('tokens', '?')} predicted tokens); {first['n_layer']} layers; oracle folders: {esc(', '.join(summaries))}; "
        f"routers: {esc(', '.join(r.name for r in routers) or 'none')}.</p>"
    )
    q = shlex.quote
    default = diff.DifficultyCommand(run)
    extra = "".join(f" --{k} {q(str(st[k]))}" for k in DIFFICULTY_KEYS if st[k] != getattr(default, k))
    cmds = [oracle_command(run, s) for s in summaries.values()]
    cmds += [c for r in routers for c in router_commands(run, r, summaries.get(r.options))]
    cmds += [f"duollm difficulty --run {q(run)}{extra}", f"duollm report --run {q(run)}"]
    page.add("<h2>How to reproduce</h2><pre>" + esc("\n".join(cmds)) + "</pre>")


def build_report(run: str) -> dict:
    """Write RUN/report/; return {"report": path of report.html, "figures": [PNG names]}."""
    if not Path(run).is_dir():
        raise DuoError(f"{run} is not a directory (expected a run directory)")
    present = options_present(run)
    if not present:
        raise DuoError(f"no oracle results under {oracle_folder(run, 'big,small').parent}: run `duollm oracle --run {run}` first")
    _new_figure(1, 1)  # fail early, before any file is written, when matplotlib is missing
    summaries = {o: read_summary(run, o) for o in present}
    routers = read_routers(run)
    evaluated = {r.options for r in routers if r.evals}  # a router's figures need its oracle's table
    tables = {o: read_table(run, o) for o in present if o in ("big,small", "big,skip") or o in evaluated}
    folder = Path(run) / "report"
    with atomic_folder(folder) as tmp:
        page = Page(tmp)
        st = difficulty_settings(run)
        _header(page, run, summaries, st, routers)
        _ppl_section(page, summaries, routers, run)
        _usage_section(page, tables)
        _skip_section(page, tables)
        _route_section(page, tables)
        _router_section(page, summaries, tables, routers)
        _difficulty_section(page, run, tables, st)
        page.add("</body></html>")
        (tmp / "report.html").write_text("\n".join(page.parts) + "\n", encoding="utf-8")
    return {"report": str(folder / "report.html"), "figures": page.figures}


def main(cmd: ReportCommand) -> None:
    res = build_report(cmd.run)
    print(json.dumps(res) if cmd.json else f"report: {res['report']} ({len(res['figures'])} figures)")

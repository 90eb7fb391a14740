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
  arena.png           when the folder holds `arena.jsonl` (from `duollm arena`): the entrants' table and their
                      perplexity against FLOPs per token and decode time (analysis/arena.py); a folder with an arena
                      and no oracle gets that section alone
The page and figures are written into a temporary folder that then replaces `RUN/report/`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np

from duollm.analysis import difficulty as diff
from duollm.analysis.arena import ARENA_FILE, arena_section
from duollm.analysis.commands import oracle_command, router_commands
from duollm.analysis.page import CSS, Page, cell, esc, new_figure
from duollm.analysis.plots import plot_difficulty, plot_ppl, plot_route_map, plot_usage
from duollm.analysis.report_routers import router_section
from duollm.analysis.routers import Router, read_routers, window_key
from duollm.analysis.table import (
    BIG,
    SKIP,
    OracleTable,
    options_present,
    oracle_folder,
    read_summary,
    read_table,
    usage,
    usage_ks,
)
from duollm.errors import DuoError
from duollm.files import atomic_folder

N_HIGHLIGHT = 3  # sequences shown as highlighted text


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
        rows.append("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in vals) + f'<td class="l">{esc(str(fixed))}</td></tr>')
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
            fig = new_figure(6, 4)
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
    want = usage_ks(t.n_layer, int(t.summary.get("groups", 1)))  # counts route groups reach, when the oracle had them
    ks = [k for k in want if f"shared/{k}" in t.route]
    modes = [m for m in ("shared", "causal") if any(f"{m}/{k}" in t.route for k in ks)]
    if not ks:
        page.note(f"no shared oracle routes for k in {want} BIG layers: add them to `duollm oracle --budgets`")
        return
    fig = new_figure(4.2 * len(ks), 2.8 * len(modes))
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
    fig = new_figure(7, 3)
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
    fig = new_figure(min(24.0, max(7.0, 0.16 * P)), 2.2 * len(modes) + 1.0)
    axes = fig.subplots(len(modes), 1, squeeze=False)[:, 0]  # (modes,) Axes
    for ax, m in zip(axes, modes, strict=True):
        plot_route_map(t.route[f"{m}/{k}"][0], t.text[0], ax, f"{m} oracle, k = {k} BIG, sequence 0")
    fig.tight_layout()
    page.figure(fig, "routes-seq0.png", f"Choice of every layer (rows) for every token of sequence 0 (columns), k = {k} BIG layers.")


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
    saved, default = diff.read_summary(run) or {}, diff.DifficultySpec(run)
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
    fig = new_figure(5, 4)
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
    default = diff.DifficultySpec(run)
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
    has_arena = (Path(run) / ARENA_FILE).is_file()
    if not present and not has_arena:
        raise DuoError(f"no oracle results under {oracle_folder(run, 'big,small').parent}: run `duollm oracle --run {run}` first")
    new_figure(1, 1)  # fail early, before any file is written, when matplotlib is missing
    if not present:  # an arena folder: its table and figure only
        return _arena_report(run)
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
        router_section(page, summaries, tables, routers)
        _difficulty_section(page, run, tables, st)
        if has_arena:
            arena_section(page, run)
        page.add("</body></html>")
        (tmp / "report.html").write_text("\n".join(page.parts) + "\n", encoding="utf-8")
    return {"report": str(folder / "report.html"), "figures": page.figures}


def _arena_report(run: str) -> dict:
    """The report of a folder that holds an arena (arena.jsonl) and no oracle: the arena section alone."""
    folder = Path(run) / "report"
    with atomic_folder(folder) as tmp:
        page = Page(tmp)
        name = esc(Path(run).resolve().name)
        page.add(f"<!doctype html><html><head><meta charset='utf-8'><title>duollm report: {name}</title><style>{CSS}</style></head><body>")
        page.add(f"<h1>duollm report: {name}</h1>")
        arena_section(page, run)
        page.add("</body></html>")
        (tmp / "report.html").write_text("\n".join(page.parts) + "\n", encoding="utf-8")
    return {"report": str(folder / "report.html"), "figures": page.figures}

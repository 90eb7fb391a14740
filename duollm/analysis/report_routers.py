"""The report's router section: every router listed, a table per options and evaluated windows (baselines,
routers, oracles, gap recovered), and the figures of where routers put their BIG (SKIP) layers."""

from __future__ import annotations

import numpy as np

from duollm.analysis.page import Page, cell, esc, new_figure, num
from duollm.analysis.plots import plot_route_map, plot_spread, plot_usage
from duollm.analysis.routers import COUNTED, KINDS, Router, RouterEval, window_key
from duollm.analysis.table import (
    BIG,
    OPTIONS,
    SKIP,
    OracleTable,
    spread,
    usage,
)


def kind_order(kind: str) -> tuple[int, str]:
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
            cells = [esc(label), *(num(v) for v in base), *(num(x and x[1].ppl) for x in pick)]
            cells += [num(b.get("ppl_oracle_causal")), num(b.get("ppl_oracle_shared"))]
            cells += [num(x and x[1].result.get("gap_recovered"), ".3f") for x in pick]
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
        rows.append("<tr>" + "".join(f'<td class="l">{cell(v)}</td>' for v in vals) + "</tr>")
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
    for r in sorted(routers, key=lambda r: (OPTIONS.index(r.options), r.counts(), kind_order(r.kind), r.name)):
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
    fig = new_figure(4.2 * len(drawn), 2.8 * (1 + len(modes)))
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
    fig = new_figure(4.2 * len(drawn), 3.0)
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
    fig = new_figure(min(24.0, max(7.0, 0.16 * len(text))), 2.2 * len(maps) + 1.0)
    for ax, (route, title) in zip(fig.subplots(len(maps), 1, squeeze=False)[:, 0], maps, strict=True):
        plot_route_map(route, text, ax, f"{title}, sequence 0")
    fig.tight_layout()
    page.figure(
        fig,
        "routers-seq0.png",
        "Choice of every layer (rows) for every token of sequence 0 (columns): each router below the oracles at its budget.",
    )


def router_section(page: Page, summaries: dict[str, dict], tables: dict[str, OracleTable], routers: list[Router]) -> None:
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

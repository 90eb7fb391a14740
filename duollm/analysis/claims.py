"""`duollm claims`: the paper's seven claims (docs/design.md, "The method"), each as numbers and a verdict,
from a run's saved files: its oracle folders, its routers' evaluations and, for claim 7, the evaluations the
`freeze` stage of scripts/study.sh writes. Files in, never the model (like the rest of analysis/).

The rules, so that every verdict can be checked by hand (L layers; "the oracle" is the shared one, the paper's;
the causal oracle's numbers stand beside it):
1. The oracle with one BIG layer per token beats all-big: holds when ppl_oracle(k=1) < ppl(all-big).
2. Oracle ppl is U-shaped in k with its minimum near L/2: holds when the minimum over k = 0..L is interior (both
   ends higher) and within one layer of L/2; partly when it is interior elsewhere; else it does not hold.
3. BIG layers move from later to uniform to earlier as k grows: the mean depth of the oracle's BIG choices
   (0 = first layer, 1 = last) at k = L/3, L/2, 2L/3; holds when it falls strictly across the three and starts
   above 0.5 and ends below; partly when it falls without crossing 0.5; else it does not hold.
   An oracle over route groups (`duollm oracle --groups G`: G consecutive layers share a choice, the summary's
   `groups`) reaches only the counts whole groups add up to, so there claim 1 reads the smallest (one group BIG:
   k = G), claim 2 needs every reachable count and allows G layers from L/2, and claim 3 takes the reachable
   counts nearest L/3, L/2, 2L/3.
4. The paper router is about as good as the best of N random routes, and far from the oracle: for every paper
   router evaluated on the oracle's windows, "about" = within 5% of the random best's ppl and "far" = the
   causal oracle at least 10% below both; holds when true at every budget, partly at some.
5. A constant budget beats a schedule with the same mean: ppl_oracle(k) < ppl_oracle(a>b) for each schedule
   a>b in the folder with (a + b) / 2 = k; holds when true for all of them.
6. With big/skip there is no clean early-exit pattern: at s = L/2 skipped layers, the share of tokens whose
   skipped layers are exactly the last s; holds when it is below one half.
7. Training from scratch beats freeze-big-then-train-small at equal tokens: ppl under random:0.5 (and all-small)
   of the two runs; holds when scratch is lower under random:0.5.
A claim whose files are missing is "not measured", with the command that would make them. Where an oracle sweep
was cut short (at the end of a GPU lease), claims 1, 2 and 5 are read from the summary it left
(`<folder>.partial-summary.json`) and say so (`partial`); the others need the finished sweep's files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from duollm.analysis.routers import read_routers
from duollm.analysis.table import BIG, SKIP, group_counts, read_summary, read_table, usage_ks
from duollm.errors import DuoError

HOLDS, PARTLY, FAILS, MISSING = "holds", "partly", "does not hold", "not measured"


def oracle_ppl(summary: dict, row: dict, mode: str) -> float | None:
    """A budget row's oracle ppl for `mode`: its `ppl_oracle_<mode>`, or `ppl_oracle` in a folder of that mode."""
    if f"ppl_oracle_{mode}" in row:
        return row[f"ppl_oracle_{mode}"]
    if any(k.startswith("ppl_oracle_") for k in row):  # per-mode keys, and this mode did not run for this budget
        return None
    return row.get("ppl_oracle") if summary.get("mode") == mode else None


def by_k(summary: dict, mode: str = "shared") -> dict[str, float]:
    """Budget label (str) → oracle ppl, for the rows that have it."""
    out = {}
    for row in summary["budgets"]:
        p = oracle_ppl(summary, row, mode)
        if p is not None:
            out[str(row["k"])] = float(p)
    return out


def groups_of(summary: dict) -> int:
    """The oracle's route group size (1: no groups)."""
    return max(int(summary.get("groups", 1)), 1)


def claim_1(summary: dict) -> dict:
    ppl, big = by_k(summary), float(summary["ppl_all_big"])
    one = str(min(k for k in group_counts(int(summary["n_layer"]), groups_of(summary)) if k > 0)) if "n_layer" in summary else "1"
    if one not in ppl:
        return {"verdict": MISSING, "why": f"no oracle at k = {one}"}
    causal = by_k(summary, "causal").get(one)
    res = {"verdict": HOLDS if ppl[one] < big else FAILS, f"ppl_oracle_k{one}": ppl[one], f"ppl_causal_k{one}": causal, "ppl_all_big": big}
    return res if one == "1" else {**res, "groups": groups_of(summary)}


def claim_2(summary: dict, n_layer: int) -> dict:
    ppl, g = by_k(summary), groups_of(summary)
    want = group_counts(n_layer, g)
    ks = [k for k in want if str(k) in ppl]
    if ks != want:
        return {
            "verdict": MISSING,
            "why": f"the oracle needs every k in {want[0]}..{n_layer}" + (f" reachable by groups of {g}" if g > 1 else ""),
        }
    curve = [ppl[str(k)] for k in ks]
    k_min = ks[int(np.argmin(curve))]
    interior = 0 < k_min < n_layer
    verdict = HOLDS if interior and abs(k_min - n_layer / 2) <= g else PARTLY if interior else FAILS
    causal = by_k(summary, "causal")
    k_causal = ks[int(np.argmin([causal[str(k)] for k in ks]))] if all(str(k) in causal for k in ks) else None
    res = {"verdict": verdict, "k_min": k_min, "k_min_causal": k_causal, "ppl": dict(zip(map(str, ks), curve, strict=True))}
    return res if g == 1 else {**res, "groups": g}


def mean_depth(route: np.ndarray, choice: int) -> float:
    """Mean layer position (0 = first, 1 = last) of `choice` over routes (..., L)."""
    L = route.shape[-1]
    mask = route == choice
    return float((mask * np.linspace(0.0, 1.0, L)).sum() / max(1, mask.sum()))


def claim_3(routes: dict[int, np.ndarray]) -> dict:
    """`routes`: k → the oracle's routes (N, T-1, L) at k = L/3, L/2, 2L/3."""
    depth = {k: mean_depth(r, BIG) for k, r in sorted(routes.items())}
    d = list(depth.values())
    falls = all(a > b for a, b in zip(d, d[1:], strict=False))
    verdict = HOLDS if falls and d[0] > 0.5 > d[-1] else PARTLY if falls else FAILS
    return {"verdict": verdict, "mean_big_depth": {str(k): v for k, v in depth.items()}}


def claim_4(rows: list[dict]) -> dict:
    """`rows`: per budget {k, router, random_best, causal_oracle} ppl."""
    if not rows:
        return {
            "verdict": MISSING,
            "why": "no paper router evaluated on the oracle's windows at a budget with random best-of-N and the causal oracle",
        }
    ok = [abs(r["router"] / r["random_best"] - 1) <= 0.05 and r["causal_oracle"] <= 0.9 * min(r["router"], r["random_best"]) for r in rows]
    return {"verdict": HOLDS if all(ok) else PARTLY if any(ok) else FAILS, "budgets": rows}


def claim_5(ppl: dict[str, float]) -> dict:
    pairs = []
    for label in ppl:
        if ">" in label:
            a, b = (int(v) for v in label.split(">"))
            if (a + b) % 2 == 0 and str((a + b) // 2) in ppl:
                pairs.append(
                    {"schedule": label, "constant": (a + b) // 2, "ppl_schedule": ppl[label], "ppl_constant": ppl[str((a + b) // 2)]}
                )
    if not pairs:
        return {"verdict": MISSING, "why": "no schedule a>b with its constant mean in the oracle (e.g. --budgets 4,6>2)"}
    return {"verdict": HOLDS if all(p["ppl_constant"] < p["ppl_schedule"] for p in pairs) else FAILS, "pairs": pairs}


def early_exit_share(route: np.ndarray, s: int) -> float:
    """Share of routes (..., L) whose SKIP layers are exactly the last s."""
    L = route.shape[-1]
    suffix = np.array([False] * (L - s) + [True] * s)
    return float(((route == SKIP) == suffix).all(-1).mean())


def claim_6(route: np.ndarray, s: int) -> dict:
    share = early_exit_share(route, s)
    return {"verdict": HOLDS if share < 0.5 else FAILS, "skipped": s, "early_exit_share": share, "mean_skip_depth": mean_depth(route, SKIP)}


def claim_7(scratch: dict[str, float], frozen: dict[str, float]) -> dict:
    """Policy → ppl of each run."""
    if "random:0.5" not in scratch or "random:0.5" not in frozen:
        return {"verdict": MISSING, "why": "no random:0.5 evaluation of both runs"}
    return {"verdict": HOLDS if scratch["random:0.5"] < frozen["random:0.5"] else FAILS, "scratch": scratch, "frozen": frozen}


TEXT = {
    1: "oracle with 1 BIG layer per token beats all-big",
    2: "oracle ppl U-shaped in k, minimum near L/2",
    3: "BIG placement later → uniform → earlier for k = L/3, L/2, 2L/3",
    4: "paper router ≈ best-of-N random ≪ oracle",
    5: "a constant budget beats a schedule with the same mean",
    6: "big/skip: no clean early-exit pattern",
    7: "from scratch beats freeze-big-then-train-small at equal tokens",
}


def _freeze_ppl(path: Path) -> dict[str, float]:
    return {r["policy"]: float(r["ppl"]) for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())}


def claims(run: str | Path, freeze: str | Path = "") -> list[dict]:
    run = Path(run)
    out: dict[int, dict] = {}
    try:
        summary = read_summary(run, "big,small", partial=True)
    except DuoError as e:
        summary = None
        for n in (1, 2, 3, 4, 5):
            out[n] = {"verdict": MISSING, "why": str(e)}
    if summary is not None:
        L = int(summary["n_layer"])
        out[1], out[2], out[5] = claim_1(summary), claim_2(summary, L), claim_5(by_k(summary))
        if "partial" in summary:
            for n in (1, 2, 5):
                out[n]["partial"] = f"from a sweep cut short ({summary['partial']})"
        ks = usage_ks(L, groups_of(summary))  # the k of the report's usage figures
        try:
            table = read_table(run, "big,small")
            have = [k for k in ks if f"shared/{k}" in table.route]
            out[3] = (
                claim_3({k: table.route[f"shared/{k}"] for k in have})
                if len(ks) == 3 and have == ks
                else {"verdict": MISSING, "why": f"needs the oracle at k = {ks}"}
            )
        except DuoError as e:  # a sweep cut short leaves a summary but no table
            out[3] = {"verdict": MISSING, "why": str(e)}
        rows = []
        for r in read_routers(run):
            ev = r.matching_eval(summary)
            row = next((b for b in summary["budgets"] if str(b["k"]) == r.budget_label()), None)
            if r.kind != "paper" or r.options != "big,small" or ev is None or row is None:
                continue
            if "ppl_oracle_causal" in row and row.get("ppl_random_best") is not None:  # both ran at this budget
                rows.append(
                    {"k": row["k"], "router": ev.ppl, "random_best": row["ppl_random_best"], "causal_oracle": row["ppl_oracle_causal"]}
                )
        out[4] = claim_4(rows)
    try:
        skip = read_table(run, "big,skip")
        s = int(skip.n_layer) // 2
        out[6] = (
            claim_6(skip.route[f"shared/{s}"], s)
            if f"shared/{s}" in skip.route
            else {"verdict": MISSING, "why": f"no big/skip oracle at s = {s}"}
        )
    except DuoError as e:
        out[6] = {"verdict": MISSING, "why": str(e)}
    files = [Path(freeze) / f"freeze-{name}.jsonl" for name in ("scratch", "frozen")] if freeze else []
    if files and all(f.is_file() for f in files):
        out[7] = claim_7(*(_freeze_ppl(f) for f in files))
    else:
        out[7] = {"verdict": MISSING, "why": "run `bash scripts/study.sh freeze` and pass --freeze OUT"}
    return [{"claim": n, "text": TEXT[n], **out[n]} for n in sorted(out)]


def _numbers(c: dict) -> str:
    keep = {k: v for k, v in c.items() if k not in ("claim", "text", "verdict")}
    return json.dumps(keep, ensure_ascii=False, default=float)[:300]


def format_claims(res: list[dict]) -> str:
    """The claims as a Markdown table: number, claim, verdict, the numbers behind it."""
    rows = [f"| {c['claim']} | {c['text']} | {c['verdict']} | {_numbers(c)} |" for c in res]
    return "\n".join(["| # | claim | verdict | numbers |", "|---|---|---|---|", *rows])

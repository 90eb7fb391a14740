"""`duollm difficulty`: which tokens gain from compute, by two measures, and how far the measures agree.

    duollm difficulty --run RUN                                   # against the free shared oracle
    duollm difficulty --run RUN --mode causal --budget 6 --top 50

Per predicted token (docs/design.md §1; arXiv:2410.10846 §3.2.2):
  D_conv = loss(all-small)                   conventional: hard for the small model
  D_rel  = loss(all-small) − loss(oracle)    relative: what routing it through big modules can gain
The oracle is the column `<mode>/<budget>` of `RUN/oracle/<options>/tokens.jsonl.gz`; the default, the
unconstrained shared oracle `free`, gives the paper's measure. The agreement of the two measures is their
Spearman rank correlation (average ranks for ties) and Pearson correlation over all tokens.

Writes `RUN/difficulty/summary.json` (atomically): `options`, `mode`, `budget`, `top`, `context`, `tokens`,
`spearman`, `pearson` (null when a measure is constant), `mean_d_conv`, `mean_d_rel`, and `top_conv`,
`top_rel`: the `top` tokens by each measure, hardest first, as `{seq, pos, context, text, d_conv, d_rel}`,
where `context` is the text of the `context` tokens before it in its window (the window's first token,
which nothing predicts, is not in the table, so the context of position 0 is empty).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duollm.analysis.table import OracleTable
from duollm.errors import DuoError
from duollm.files import write_json
from duollm.flags import Count


@dataclass
class DifficultySpec:
    """The settings of a difficulty measure: which oracle column is the reference, how many tokens to list."""

    run: str  # run directory with oracle results (from duollm oracle)
    options: str = "big,small"  # which oracle folder: big,small | big,skip | big,small,skip
    mode: str = "shared"  # oracle mode: shared | causal
    budget: str = "free"  # the oracle's budget label: free, a count such as 6, a schedule such as 6>2
    top: Count = 20  # list this many tokens by each measure
    context: Count = 8  # with this many preceding tokens of the same window


def difficulty(table: OracleTable, mode: str = "shared", budget: str = "free") -> tuple[np.ndarray, np.ndarray]:
    """(D_conv, D_rel), each (N, T-1) float64; DuoError listing the budgets present when the column is absent."""
    oracle = table.loss[table.column(mode, budget)]  # (N, T-1)
    d_conv = table.loss["all-small"]  # (N, T-1)
    return d_conv, d_conv - oracle


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing the average of their ranks: [10, 20, 20, 5] → [2, 3.5, 3.5, 1]."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # (U,) rank of the last member of each distinct value
    return ((last - counts + 1 + last) / 2.0)[inverse.reshape(-1)]  # (n,)


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of two equal-size arrays; None when either is constant."""
    dx, dy = x.ravel() - x.mean(), y.ravel() - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else None


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation: Pearson of the average ranks; None when either is constant."""
    return pearson(ranks(x.ravel()), ranks(y.ravel()))


def top_tokens(table: OracleTable, score: np.ndarray, d_conv: np.ndarray, d_rel: np.ndarray, n: int, context: int) -> list[dict]:
    """The `n` tokens with the highest `score` (N, T-1), ties in reading order, each with its left context."""
    P = score.shape[1]
    order = np.argsort(-score.ravel(), kind="stable")[:n]  # flat indices, highest first
    out = []
    for i in order.tolist():
        s, p = divmod(i, P)
        out.append(
            {
                "seq": s,
                "pos": p,
                "context": "".join(table.text[s][max(0, p - context) : p]),
                "text": table.text[s][p],
                "d_conv": round(float(d_conv[s, p]), 5),
                "d_rel": round(float(d_rel[s, p]), 5),
            }
        )
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 5)


def measure(table: OracleTable, mode: str = "shared", budget: str = "free", top: int = 20, context: int = 8) -> dict:
    """The summary of the module docstring, for one oracle table."""
    if top < 0 or context < 0:
        raise DuoError(f"--top and --context must be >= 0, got {top} and {context}")
    d_conv, d_rel = difficulty(table, mode, budget)
    return {
        "options": table.options,
        "mode": mode,
        "budget": budget,
        "top": top,
        "context": context,
        "tokens": int(d_conv.size),
        "spearman": _r(spearman(d_conv, d_rel)),
        "pearson": _r(pearson(d_conv, d_rel)),
        "mean_d_conv": round(float(d_conv.mean()), 5),
        "mean_d_rel": round(float(d_rel.mean()), 5),
        "top_conv": top_tokens(table, d_conv, d_conv, d_rel, top, context),
        "top_rel": top_tokens(table, d_rel, d_conv, d_rel, top, context),
    }


def write_summary(run: str | Path, summary: dict) -> Path:
    """RUN/difficulty/summary.json, written to a temporary file first and then moved into place."""
    folder = Path(run) / "difficulty"
    write_json(folder / "summary.json", summary, ensure_ascii=False)
    return folder / "summary.json"


def read_summary(run: str | Path) -> dict | None:
    """RUN/difficulty/summary.json, or None when there is none (or it cannot be read)."""
    path = Path(run) / "difficulty" / "summary.json"
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def _show(text: str) -> str:
    return text.replace("\n", "\\n").replace("\t", "\\t")


def format_summary(s: dict) -> str:
    """A few lines for people: the correlations, the means, and the hardest tokens by each measure."""

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        f"difficulty over {s['tokens']} tokens, oracle {s['mode']}/{s['budget']} ({s['options']}): "
        f"spearman {num(s['spearman'])}, pearson {num(s['pearson'])}; mean D_conv {s['mean_d_conv']:.3f}, mean D_rel {s['mean_d_rel']:.3f}"
    ]
    for key, name in (("top_rel", "D_rel"), ("top_conv", "D_conv")):
        lines.append(f"top {len(s[key])} by {name}:\n{'D_rel':>8} {'D_conv':>7} {'seq':>4} {'pos':>5}  context [token]")
        for t in s[key]:
            lines.append(f"{t['d_rel']:>8.3f} {t['d_conv']:>7.3f} {t['seq']:>4} {t['pos']:>5}  {_show(t['context'])}[{_show(t['text'])}]")
    return "\n".join(lines)

"""The report's figures, one function each: `plot_x(data, ax) -> ax` draws on a matplotlib Axes it is given.

They take arrays and summaries read from a run directory (duollm/analysis/table.py), never live objects, and
import matplotlib only inside (it is the optional `[analysis]` extra). The caller makes the Figure.
"""

from __future__ import annotations

import numpy as np

from duollm.analysis.table import LETTERS

CHOICE_COLORS = ("#d9d9d9", "#8ecae6", "#d95f02")  # skip, small, big
CHOICE_NAMES = ("skip", "small", "big")
# kind → (marker, color, filled); others a gray "P". Hollow diamonds leave a star at the same point visible
ROUTER_MARKERS = {"paper": ("*", "#e7298a", True), "supervised": ("D", "#7570b3", False), "label-free": ("X", "#1b9e77", True)}


def tick_text(text: str, width: int = 10) -> str:
    """A token's text as a tick label: whitespace made visible, `$` kept out of mathtext, long pieces cut."""
    text = text.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "·")
    text = text[:width] + ("…" if len(text) > width else "")
    return text.replace("$", r"\$")


def plot_ppl(summary: dict, ax, routers: list[dict] = ()):
    """Perplexity against integer budgets: the oracles, fixed, best-of-N random, and all-big/all-small lines;
    plus learned routers, `{"x": layers per token, "ppl", "kind"}` each, one marker style per kind."""
    rows = sorted((r for r in summary["budgets"] if isinstance(r["k"], int)), key=lambda r: r["k"])
    ks = [r["k"] for r in rows]
    for key, label, style in (
        ("ppl_oracle_shared", "oracle shared", "o-"),
        ("ppl_oracle_causal", "oracle causal", "s-"),
        ("ppl_fixed", "fixed", "^--"),
        ("ppl_random_best", "random best-of-N", "v:"),
    ):
        pts = [(k, r[key]) for k, r in zip(ks, rows, strict=True) if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=label, markersize=4)
    for kind in dict.fromkeys(r["kind"] for r in routers):  # kinds in order of appearance, one legend entry each
        marker, color, filled = ROUTER_MARKERS.get(kind, ("P", "#666666", True))
        pts = [(r["x"], r["ppl"]) for r in routers if r["kind"] == kind]
        style = {"markersize": 11} if filled else {"markersize": 12, "markerfacecolor": "none", "markeredgewidth": 1.8}
        label = "label-free choice" if kind == "label-free" else f"{kind} router"
        ax.plot(*zip(*pts, strict=True), marker, color=color, ls="none", label=label, zorder=3, **style)
    ax.axhline(summary["ppl_all_big"], color="k", lw=1, label="all-big")
    ax.axhline(summary["ppl_all_small"], color="gray", lw=1, ls="--", label="all-small")
    ppls = [r[k] for r in rows for k in ("ppl_oracle_shared", "ppl_fixed") if r.get(k)] + [summary["ppl_all_big"]]
    if ppls and max(ppls) > 3 * min(ppls):
        ax.set_yscale("log")
    ax.set_xticks(ks)
    ax.set_xlabel("BIG layers per token" if summary["options"] == "big,small" else "SKIP layers per token")
    ax.set_ylabel("perplexity")
    ax.set_title(f"oracle {summary['options']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_usage(frac: np.ndarray, ax, title: str, what: str = "big"):
    """A (L, T-1) map of the fraction of sequences taking `what` at each (layer, position)."""
    im = ax.imshow(frac, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("position")
    ax.set_ylabel("layer")
    ax.set_yticks(range(frac.shape[0]))
    ax.figure.colorbar(im, ax=ax, label=f"fraction {what}")
    return ax


def plot_spread(share: np.ndarray, gain: np.ndarray | None, ax, title: str, what: str = "big"):
    """Bars: the share of tokens taking 0..L `what` layers; line (right axis): their mean BIG gain, when given, at the
    counts that hold at least 0.5% of the tokens (a mean over a handful of tokens is noise)."""
    counts = np.arange(len(share))
    ax.bar(counts, share, color="#d95f02" if what == "big" else "#bdbdbd")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"{what.upper()} layers of a token")
    ax.set_ylabel("share of tokens")
    ax.set_xticks(counts)
    if gain is not None:
        twin = ax.twinx()
        twin.plot(counts, np.where(share >= 0.005, gain, np.nan), "o-", color="#1f78b4", markersize=3)
        twin.set_ylabel("mean loss(all-small) − loss(all-big)", color="#1f78b4", fontsize=8)
    return ax


def plot_route_map(route: np.ndarray, texts: list[str], ax, title: str):
    """One sequence's routes, (T-1, L) choices: positions along x (token text ticks), layers along y, 3 colors."""
    from matplotlib.colors import ListedColormap  # matplotlib is the optional analysis extra: imported on use
    from matplotlib.patches import Patch

    P, L = route.shape
    ax.imshow(route.T, aspect="auto", interpolation="nearest", cmap=ListedColormap(CHOICE_COLORS), vmin=-0.5, vmax=2.5)
    step = 1 if P <= 64 else int(np.ceil(P / 48))  # every token, or about 48 labels
    ax.set_xticks(range(0, P, step))
    labels = [tick_text(texts[p]) if step == 1 else f"{p} {tick_text(texts[p])}" for p in range(0, P, step)]
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_yticks(range(L))
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    handles = [Patch(color=c, label=f"{n} ({LETTERS[i]})") for i, (c, n) in enumerate(zip(CHOICE_COLORS, CHOICE_NAMES, strict=True))]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return ax


def plot_difficulty(d_conv: np.ndarray, d_rel: np.ndarray, ax, rho: float | None, r: float | None):
    """Scatter of the relative difficulty against the conventional one, one point per token."""
    ax.scatter(d_conv.ravel(), d_rel.ravel(), s=4, alpha=0.4, linewidths=0)
    ax.axhline(0.0, color="gray", lw=0.8)
    num = "n/a" if rho is None else f"{rho:.3f}"
    ax.set_title(f"Spearman ρ = {num}" + ("" if r is None else f", Pearson r = {r:.3f}"))
    ax.set_xlabel("D_conv = loss(all-small)")
    ax.set_ylabel("D_rel = loss(all-small) − loss(oracle)")
    ax.grid(alpha=0.3)
    return ax

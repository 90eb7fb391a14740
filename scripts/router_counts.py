"""How routers spread their BIG layers over tokens, and where that pays: the numbers behind the report's
`routers-spread.png`, as text.

    python3 scripts/router_counts.py RUN [NAME ...]

RUN holds a big/small oracle (`duollm oracle`: RUN/oracle/big-small/) and routers evaluated on its windows
(`duollm router eval`); NAME picks routers (default: every big/small router with such an evaluation). For each it
prints how many tokens take 0, 1, ... BIG layers, the correlation of a token's BIG count with its "BIG gain" (how
much all-big beats all-small on it), and, for groups of tokens by BIG count, their share, mean BIG gain, and the
router's loss minus the `fixed` route's at the router's budget (nats per token). Reads files only (no model).
"""

import sys

import numpy as np

from duollm.analysis.routers import read_routers
from duollm.analysis.table import BIG, read_table, spread
from duollm.errors import DuoError


def groups(n_layer: int) -> list[tuple[int, int]]:
    """BIG counts 0..L in about five groups, inclusive: 12 layers → 0-2, 3-4, 5-6, 7-8, 9-12."""
    edges = sorted({0, *(round(n_layer * f) for f in (1 / 4, 5 / 12, 7 / 12, 3 / 4)), n_layer + 1})
    return [(a, b - 1) for a, b in zip(edges, edges[1:], strict=False)]


def report(run: str, names: list[str]) -> str:
    table = read_table(run)
    routers = [r for r in read_routers(run) if r.options == "big,small" and (not names or r.name in names)]
    if missing := sorted(set(names) - {r.name for r in routers}):
        raise DuoError(f"no big/small router {', '.join(missing)} in {run}/routers")
    gain = table.loss["all-small"] - table.loss["all-big"]  # (N, T-1)
    lines = []
    for r in routers:
        ev = r.matching_eval(table.summary)
        fixed = table.loss.get(f"fixed/{r.budget_label()}")
        if ev is None or fixed is None:
            lines.append(f"{r.name}: not evaluated on the oracle's windows at a budget it holds; skipped")
            continue
        count = (ev.route == BIG).sum(-1)  # (N, T-1)
        share, _ = spread(ev.route)
        minus = ev.loss - fixed
        lines.append(
            f"{r.name}: {count.size} tokens, mean BIG {count.mean():.3f}, {len(np.unique(ev.route.reshape(-1, r.n_layer), axis=0))} distinct routes"
        )
        lines.append("  tokens by BIG count: " + ", ".join(f"{c}: {round(s * count.size)}" for c, s in enumerate(share) if s > 0))
        corr = f"{np.corrcoef(count.ravel(), gain.ravel())[0, 1]:.3f}" if count.min() < count.max() else "none (one count for every token)"
        lines.append(f"  correlation of BIG count with BIG gain: {corr}")
        for lo, hi in groups(r.n_layer):
            at = (count >= lo) & (count <= hi)
            if at.any():
                lines.append(
                    f"  {lo:>2}-{hi:<2} BIG: share {at.mean():.3f}, BIG gain {gain[at].mean():+.4f}, "
                    f"minus fixed/{r.budget_label()} {minus[at].mean():+.4f}"
                )
    return "\n".join(lines)


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    try:
        print(report(args[0], args[1:]))
    except DuoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

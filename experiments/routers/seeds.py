"""Routers of several seeds against each other: each one's loss minus `fixed`'s on the oracle's windows, then the
mean over seeds with its standard error from the seeds' spread, which holds the noise of training as well as of the
evaluation tokens (one seed of a router says little on the demo model: docs/results.md).

    python3 experiments/routers/seeds.py RUN PREFIX_A PREFIX_B [--seeds N]

The routers are PREFIX_A0 .. PREFIX_A{N-1} and PREFIX_B0 .. (e.g. `paper-300-s`, `expected-2048-s`), big/small,
each evaluated on the windows of RUN's big/small oracle (`duollm router eval --seqs 0`). Prints per seed each one's
loss minus `fixed` at its budget and its gap recovered, the means ± their standard errors, and B − A: the difference
of the means (± from both spreads) and the mean of the differences paired by seed. Reads files only (no model).
"""

import argparse
import statistics as st
import sys

from duollm.analysis.routers import read_routers
from duollm.analysis.table import read_table
from duollm.errors import DuoError


def minus_fixed(run: str, prefix: str, seeds: int) -> tuple[list[float], list[float]]:
    """Per seed: the router's mean loss minus `fixed`'s on the same tokens, and its gap recovered."""
    table = read_table(run)
    routers = {r.name: r for r in read_routers(run)}
    diffs, gaps = [], []
    for s in range(seeds):
        r = routers.get(f"{prefix}{s}")
        ev = r.matching_eval(table.summary) if r else None
        if ev is None:
            raise DuoError(f"no router {prefix}{s} in {run}/routers evaluated on the oracle's windows (duollm router eval --seqs 0)")
        fixed = table.loss[f"fixed/{r.budget_label()}"]
        diffs.append(float((ev.loss - fixed).mean()))
        gaps.append(ev.result["gap_recovered"])
    return diffs, gaps


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        if args.seeds < 2:
            raise DuoError("--seeds must be at least 2, for a spread")
        rows = {p: minus_fixed(args.run, p, args.seeds) for p in (args.a, args.b)}
    except DuoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = args.seeds
    for p, (d, g) in rows.items():
        print(f"{p}*: minus fixed " + " ".join(f"{x:+.4f}" for x in d) + f"; mean {st.mean(d):+.4f} ± {st.stdev(d) / n**0.5:.4f}")
        print(f"{p}*: gap recovered " + " ".join(f"{x:.3f}" for x in g) + f"; mean {st.mean(g):.3f}")
    (a, _), (b, _) = rows[args.a], rows[args.b]
    se = (st.variance(a) / n + st.variance(b) / n) ** 0.5
    paired = [y - x for x, y in zip(a, b, strict=True)]
    print(f"{args.b}* - {args.a}*: {st.mean(b) - st.mean(a):+.4f} ± {se:.4f} (means); paired by seed ± {st.stdev(paired) / n**0.5:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

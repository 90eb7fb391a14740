"""How routers spread their counted layers (BIG of big/small) over tokens, and where that pays.

    python3 scripts/router_counts.py RUN/oracle/big-small/tokens.jsonl.gz \
        paper=RUN/routers/paper-0.5/tokens-prose-val.jsonl.gz priced=RUN/routers/supervised-priced-shared-0.5/tokens-prose-val.jsonl.gz

The first argument is the oracle's per-token table (`duollm oracle` writes it; it holds all-big, all-small and the
fixed route's loss at each k); each other is NAME=FILE, a router's per-token table (`duollm router eval` writes it).
Rows are matched by (seq, pos). For each router it prints how many tokens take 0, 1, ... BIG layers, the correlation
of a token's BIG count with how much all-big beats all-small on it (the token's "BIG gain"), and, for groups of
tokens by BIG count, their share, mean BIG gain, and the router's loss minus the fixed route's at the router's mean
BIG count (nats per token). Reads files only (no model).
"""

import gzip
import json
import math
import sys
from collections import Counter

GROUPS = ((0, 2), (3, 4), (5, 6), (7, 8), (9, 12))  # BIG counts, inclusive, for a 12-layer model


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(2)


def table(path: str) -> dict:
    with gzip.open(path, "rt") as f:
        return {(r["seq"], r["pos"]): r for r in map(json.loads, f)}


def corr(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va, vb = sum((x - ma) ** 2 for x in a), sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else float("nan")


def main(args: list[str]) -> None:
    if len(args) < 2 or any("=" not in a for a in args[1:]):
        fail(__doc__)
    oracle = table(args[0])
    for arg in args[1:]:
        name, path = arg.split("=", 1)
        rows = table(path)
        keys = sorted(oracle.keys() & rows.keys())
        count = [rows[k]["route"].count("B") for k in keys]
        k = round(sum(count) / len(count))  # the budget, in whole layers, whose fixed route is the reference
        if f"loss/fixed/{k}" not in oracle[keys[0]]:
            fail(f"{args[0]} has no fixed route at k = {k}: run `duollm oracle --budgets` with {k}")
        gain = [oracle[x]["loss/all-small"] - oracle[x]["loss/all-big"] for x in keys]
        minus = [rows[x]["loss"] - oracle[x][f"loss/fixed/{k}"] for x in keys]
        hist = Counter(count)
        print(
            f"{name}: {len(keys)} tokens, mean BIG {sum(count) / len(count):.3f}, {len({rows[x]['route'] for x in keys})} distinct routes"
        )
        print("  tokens by BIG count: " + ", ".join(f"{c}: {hist[c]}" for c in sorted(hist)))
        print(f"  correlation of BIG count with BIG gain: {corr(count, gain):.3f}")
        for lo, hi in GROUPS:
            idx = [i for i, c in enumerate(count) if lo <= c <= hi]
            if idx:
                share, g, m = len(idx) / len(keys), sum(gain[i] for i in idx) / len(idx), sum(minus[i] for i in idx) / len(idx)
                print(f"  {lo:>2}-{hi:<2} BIG: share {share:.3f}, BIG gain {g:+.4f}, minus fixed/{k} {m:+.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])

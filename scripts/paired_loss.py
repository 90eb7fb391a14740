"""Paired per-token loss differences between policies scored on the same tokens, with standard errors.

    python3 scripts/paired_loss.py fixed=RUN/oracle/big-small/tokens.jsonl.gz:loss/fixed/2 \
        paper=RUN/routers/paper-300/tokens-prose-val.jsonl.gz sup=RUN/routers/sup-2048/tokens-prose-val.jsonl.gz

Each argument is NAME=FILE[:COLUMN] (COLUMN defaults to `loss`): a per-token table that `duollm oracle` or
`duollm router eval` wrote. Rows are matched by (seq, pos). Prints, for every policy after the first, its mean
loss minus the first's (nats per token) ± the standard error of that mean, and the same for every pair.
Reads files only (no model).
"""

import gzip
import json
import math
import sys


def column(arg: str) -> tuple[str, dict]:
    name, rest = arg.split("=", 1)
    path, _, col = rest.partition(".gz:")
    path, col = (path + ".gz", col) if col else (rest, "loss")
    with gzip.open(path, "rt") as f:
        return name, {(r["seq"], r["pos"]): r[col] for r in map(json.loads, f)}


def diff(a: dict, b: dict) -> tuple[float, float, int]:
    keys = a.keys() & b.keys()
    d = [a[k] - b[k] for k in keys]
    m = sum(d) / len(d)
    var = sum((x - m) ** 2 for x in d) / max(1, len(d) - 1)
    return m, math.sqrt(var / len(d)), len(d)


def main(args: list[str]) -> None:
    if len(args) < 2:
        sys.exit(__doc__)
    cols = [column(a) for a in args]
    for i, (na, a) in enumerate(cols):
        for nb, b in cols[:i]:
            m, se, n = diff(a, b)
            print(f"{na} - {nb}: {m:+.5f} ± {se:.5f} nats over {n} tokens")


if __name__ == "__main__":
    main(sys.argv[1:])

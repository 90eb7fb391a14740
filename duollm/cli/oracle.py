"""`duollm oracle`: the oracle sweep of a trained run (what it writes: oracle/job.py), printed as a table."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from duollm import distributed
from duollm.oracle.job import OracleSpec, run_oracle


@dataclass
class OracleCommand(OracleSpec):
    """Oracle routes under compute budgets, with fixed and random baselines, on held-out text."""

    json: bool = False  # print one JSON object instead of a table


def main(cmd: OracleCommand) -> None:
    s = run_oracle(cmd, progress=not cmd.json, log=None if cmd.json else lambda line: print(line, file=sys.stderr))
    if not distributed.is_main_process():  # every rank holds the summary; one prints it (two would interleave)
        return
    print(json.dumps(s) if cmd.json else format_table(s))


def format_table(s: dict) -> str:
    """The ppl-vs-budget table."""
    what = "BIG" if s["options"] == "big,small" else "SKIP" if s["options"] == "big,skip" else "b/m/s"
    cols = [f"oracle {m}" for m in s["modes"]] + ["fixed", "random best"]
    how = (f"; beam {s['beam']}" if s.get("beam") else "") + (f"; groups of {s['groups']} layers" if s.get("groups", 1) > 1 else "")
    lines = [
        f"{s['split']}: {s['tokens']} tokens, {s['n_layer']} layers; all-big {s['ppl_all_big']:.2f}, all-small {s['ppl_all_small']:.2f}{how}"
    ]
    lines.append(f"{what:>6} " + " ".join(f"{c:>14}" for c in cols))
    for r in s["budgets"]:
        vals = [r.get(f"ppl_oracle_{m}") for m in s["modes"]] + [r["ppl_fixed"], r["ppl_random_best"]]
        lines.append(f"{r['k']!s:>6} " + " ".join(f"{v:>14.2f}" if v is not None else f"{'-':>14}" for v in vals))
    return "\n".join(lines)

"""`duollm arena`: entrants trained side by side at equal training tokens, evaluated, tabulated and drawn
(train/arena.py, analysis/arena.py; docs/arena.md)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from duollm.analysis.arena import paired_cells, params_m, summarize, write_arena_figure
from duollm.train.arena import ArenaSpec, run_arena


@dataclass
class ArenaCommand(ArenaSpec):
    """Train every entrant at the same training tokens, then held-out perplexity and FLOPs per token: OUT/arena.jsonl, OUT/arena.png."""

    json: bool = False  # print one JSON object instead of the table


def format_table(rows: list[dict]) -> str:
    """The entrants (means over seeds) as a markdown table."""
    points = summarize(rows)
    splits = list(points[0]["ppl"])
    head = ["entrant", "seeds", *(f"ppl {s}" for s in splits), "MFLOP/token", "of dense BIG", "FFN share", "target", "parameters (M)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        ppl = [f"{p['ppl'][s]:.2f}" + (f" ± {p['ppl_se'][s]:.2f}" if p["ppl_se"][s] is not None else "") for s in splits]
        target = f"{p['target']:.3f}" if p["target"] is not None else "-"
        vals = [
            p["label"],
            str(len(p["seeds"])),
            *ppl,
            f"{p['flops_per_token'] / 1e6:.3f}",
            f"{p['compute']:.1%}",
            f"{p['ffn_share']:.3f}",
            target,
            params_m(p["params"]),
        ]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def format_paired(rows: list[dict]) -> str:
    """Each entrant against the plain dense entrant of nearest FLOPs (analysis/arena.py `paired_cells`) as a markdown
    table; "" when there is nothing to pair."""
    head, body = paired_cells(rows)
    if not body:
        return ""
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in body)])


def main(cmd: ArenaCommand) -> None:
    res = run_arena(cmd, log=None if cmd.json else lambda line: print(line, file=sys.stderr, flush=True))
    res["figure"] = str(write_arena_figure(cmd.out))
    if cmd.json:
        print(json.dumps(res))
        return
    skipped = f"; already in {cmd.out}: {', '.join(res['skipped'])}" if res["skipped"] else ""
    print(format_table(res["rows"]))
    pairs = format_paired(res["rows"])
    if pairs:  # above 0: worse than the dense model of equal FLOPs; ± the paired standard error over seeds
        print("\nagainst the dense entrant of nearest FLOPs, paired by seed:\n\n" + pairs)
    print(f"\n{cmd.out}/arena.jsonl, {res['figure']}; {res['seconds']:.0f} s{skipped}")

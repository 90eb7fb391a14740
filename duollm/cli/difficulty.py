"""`duollm difficulty`: token difficulty against the oracle, from a run's oracle table (analysis/difficulty.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from duollm.analysis.difficulty import DifficultySpec, format_summary, measure, write_summary
from duollm.analysis.table import read_table


@dataclass
class DifficultyCommand(DifficultySpec):
    """Token difficulty: loss(all-small) (conventional) against loss(all-small) - loss(oracle) (relative)."""

    json: bool = False  # print one JSON object instead of a summary


def main(cmd: DifficultyCommand) -> None:
    s = measure(read_table(cmd.run, cmd.options), cmd.mode, cmd.budget, cmd.top, cmd.context)
    write_summary(cmd.run, s)
    print(json.dumps(s, ensure_ascii=False) if cmd.json else format_summary(s))

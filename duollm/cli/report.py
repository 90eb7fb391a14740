"""`duollm report`: the HTML report of a run, rebuilt from its saved files (analysis/report.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from duollm.analysis.report import build_report


@dataclass
class ReportCommand:
    """An HTML report of a run: every figure rebuilt from the run's saved oracle and difficulty files."""

    run: str  # run directory with oracle results (from duollm oracle), or an arena folder (from duollm arena)
    json: bool = False  # print one JSON object instead of a line


def main(cmd: ReportCommand) -> None:
    res = build_report(cmd.run)
    print(json.dumps(res) if cmd.json else f"report: {res['report']} ({len(res['figures'])} figures)")

"""`duollm claims`: the paper's seven claims, as numbers and verdicts, from a run's files (analysis/claims.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from duollm.analysis.claims import claims, format_claims
from duollm.files import write_json


@dataclass
class ClaimsCommand:
    """The paper's seven claims as numbers and verdicts, from a run's oracle, router and freeze-ablation files."""

    run: str  # run directory with oracle results (from duollm oracle, scripts/study.sh)
    freeze: str = ""  # folder with freeze-scratch.jsonl and freeze-frozen.jsonl (scripts/study.sh freeze)
    json: bool = False  # print one JSON object instead of a table


def main(cmd: ClaimsCommand) -> None:
    res = claims(cmd.run, cmd.freeze)
    write_json(Path(cmd.run) / "claims.json", res, ensure_ascii=False)
    print(json.dumps(res, ensure_ascii=False) if cmd.json else format_claims(res))

"""`duollm mc`: multiple-choice accuracy of a run under a policy, offline (eval/mc.py), printed as a line."""

from __future__ import annotations

import json
from dataclasses import dataclass

from duollm.eval.mc import MCSpec, evaluate_mc


@dataclass
class MCCommand(MCSpec):
    """Multiple-choice accuracy under a policy (JSONL lines: context, choices, label)."""

    json: bool = False  # print one JSON object instead of a line


def main(cmd: MCCommand) -> None:
    res = evaluate_mc(cmd)
    if cmd.json:
        print(json.dumps(res))
    else:
        print(f"{res['policy']} on {res['data']}: {res['examples']} questions, acc {res['acc']:.4f}, acc_norm {res['acc_norm']:.4f}")

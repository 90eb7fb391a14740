"""`duollm eval`: per-token losses and perplexity of a run under a policy (eval/evaluate.py), printed as a line."""

from __future__ import annotations

import json
from dataclasses import dataclass

from duollm.eval.evaluate import EvalSpec, evaluate


@dataclass
class EvalCommand(EvalSpec):
    """Per-token losses and perplexity of a run under a policy."""

    json: bool = False  # print one JSON object instead of a table


def main(cmd: EvalCommand) -> None:
    res = evaluate(cmd)
    if cmd.json:
        print(json.dumps(res))
    else:
        flops = f"{res['flops_per_token'] / 1e6:.3f} MFLOP/token ({res['flops_per_token'] / res['flops_all_big']:.1%} of all-big)"
        print(f"{res['policy']} on {res['split']}: {res['tokens']} tokens, loss {res['loss']:.4f}, ppl {res['ppl']:.2f}, {flops}")

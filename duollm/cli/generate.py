"""`duollm generate`: continue prompts with a run under a routing policy (eval/generate.py), printed as text."""

from __future__ import annotations

import json
from dataclasses import dataclass

from duollm.eval.generate import GenerateSpec, run_generate


@dataclass
class GenerateCommand(GenerateSpec):
    """Continue a prompt under a routing policy (static route, random, or a trained router)."""

    json: bool = False  # print one JSON object instead of text


def main(cmd: GenerateCommand) -> None:
    results = run_generate(cmd)
    if cmd.json:
        print(json.dumps({"policy": cmd.policy, "results": results} if len(results) > 1 else {"policy": cmd.policy, **results[0]}))
        return
    for r in results:
        if "realized" not in r:  # an arena entrant: its own routing, its FLOPs
            print(f"{r['prompt']}{r['text']}\n  [{r['method']}: {r['flops_per_token'] / 1e6:.3f} MFLOP per generated token]")
            continue
        f = r["realized"]
        if "speculation" in r:  # all-BIG's greedy text, drafted by a cheaper route
            sp = r["speculation"]
            print(
                f"{r['prompt']}{r['text']}\n  [all-big, drafted by {sp['draft']} in rounds of {sp['k']}: {sp['accepted']} of "
                f"{sp['drafted']} drafts kept ({sp['acceptance']:.0%}), {sp['flops'] / sp['flops_all_big']:.2f}x the FLOPs of plain decoding]"
            )
            continue
        print(f"{r['prompt']}{r['text']}\n  [{cmd.policy}: big {f['big']:.2f} small {f['small']:.2f} skip {f['skip']:.2f}]")

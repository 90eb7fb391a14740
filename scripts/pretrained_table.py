"""The table of docs/pretrained.md: imported runs (one per way of making SMALL) × policies × splits, perplexity and
counted forward FLOPs per token, as `duollm eval` measures them.

    python scripts/pretrained_table.py runs/smol-slice runs/smol-distill --policies all-big,all-small,random:0.5 \
        --splits prose-val,code-val --max-tokens 8192 --out docs/study/pretrained/table.jsonl

`--policy P` (repeatable) adds a policy whose text holds commas (`exit:0.9,from=24`) after the `--policies` list.
Each cell is one `evaluate` (the same windows for every run and policy of a split: the first `--max-tokens` tokens
in windows of the run's seq_len); `--out` gets one JSON row per cell, stdout the Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from duollm.eval.evaluate import EvalSpec, evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--policies", default="all-big,all-small,random:0.5")
    ap.add_argument("--policy", action="append", default=[], help="one more policy, commas allowed (repeatable)")
    ap.add_argument("--splits", default="prose-val,code-val")
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    policies = [p for p in args.policies.split(",") if p] + args.policy
    rows = []
    for run in args.runs:
        method = json.loads((Path(run) / "pretrained.json").read_text())
        for split in args.splits.split(","):
            for policy in policies:
                res = evaluate(EvalSpec(run=run, policy=policy, split=split, max_tokens=args.max_tokens, batch_size=4))
                row = {"run": run, "small": method["small"], "d_small": method["d_small"], **res}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = args.splits.split(",")
    print("\n| SMALL | policy | " + " | ".join(f"ppl {s}" for s in splits) + " | MFLOPs/token |")
    print("|---|---|" + "---|" * (len(splits) + 1))
    for run in args.runs:
        for policy in policies:
            cells = {r["split"]: r for r in rows if r["run"] == run and r["policy"] == policy}
            first = cells[splits[0]]
            flops = f"{first['flops_per_token'] / 1e6:.1f}" if first.get("flops_per_token") is not None else "-"
            ppl = " | ".join(f"{cells[s]['ppl']:.2f}" for s in splits)
            print(f"| {first['small']} {first['d_small']} | {policy} | {ppl} | {flops} |")


if __name__ == "__main__":
    main()

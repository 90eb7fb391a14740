"""How much of the shared oracle's gain over `fixed` a per-token choice can reach without the label.

    python3 scripts/label_free.py RUN [--split prose-val] [--seqs 128] [--seq-len 128] [--budgets 1,2,3] [--groups G] [--json]

For each budget (exactly k BIG layers), every route runs as a whole-sequence route over the same windows; each
token then takes the route whose next-token distribution is closest (cross-entropy) to the all-big model's
(`duollm.oracle.label_free`). Prints per k: `fixed` (the best single route), the label-free choice, the shared
oracle (the best route per token, knowing the label), the share of fixed → oracle that the label-free choice
recovers, and its paired difference from `fixed` (nats per token ± one standard error); with --json, one JSON
object per k, also written to --out (a JSONL file, which `duollm report` draws beside the oracle when it is
RUN/label-free-<split>.jsonl and its windows are the oracle's). One forward per route: C(L, k) + 1 forwards of every window;
with `--groups G`, G consecutive layers share one choice (as `duollm oracle --groups`), so a 30-layer model at G = 3
needs C(10, k/3) + 1.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from duollm.data.corpus import eval_windows, pick_windows, token_array
from duollm.errors import DuoError
from duollm.oracle.baselines import label_free_summary
from duollm.oracle.groups import Groups
from duollm.routing.budget import Budget
from duollm.runs.load import autocast, check_dtype, load_run


def main(args) -> None:
    check_dtype(args.dtype)
    if args.out and not args.json:
        raise DuoError("--out writes JSON lines: give --json with it")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, model, tok = load_run(Path(args.run), device)
    windows = pick_windows(eval_windows(token_array(args.split, tok), args.seq_len), args.seqs, args.pick)
    try:
        ks = [int(v) for v in args.budgets.split(",")]
    except ValueError:
        raise DuoError(f"--budgets must be counts of BIG layers separated by commas, got {args.budgets!r}") from None
    if not all(0 <= k <= cfg.model.n_layer for k in ks):
        raise DuoError(f"--budgets {args.budgets}: each must be a count of BIG layers from 0 to {cfg.model.n_layer}")
    groups = Groups.of(cfg.model.n_layer, args.groups)  # DuoError for a size outside 0..n_layer
    for k in ks:
        groups.check(Budget.exactly_big(k), f"--budgets {k}")
    if not args.json:
        print(f"{args.split}: {len(windows)} windows × {args.seq_len} tokens, {cfg.model.n_layer} layers (nats per token)")
    rows = []
    for k in ks:
        with autocast(args.dtype, device):
            res = label_free_summary(model, windows, Budget.exactly_big(k), args.batch_size, None if groups.trivial else groups)
        if args.json:
            row = {
                "k": k,
                "split": args.split,
                "seqs": len(windows),
                "seq_len": args.seq_len,
                "pick": args.pick,
                "dtype": args.dtype,
                "groups": max(args.groups, 1),
                **res,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            continue
        print(
            f"k = {k}: fixed {res['loss_fixed']:.4f}, label-free {res['loss_label_free']:.4f}, shared oracle {res['loss_oracle_shared']:.4f};"
            f" recovered {'–' if res['gap_recovered'] is None else format(res['gap_recovered'], '.3f')} of the gap; label-free − fixed {res['diff_fixed']:+.4f} ± {res['diff_fixed_se']:.4f}"
        )
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--split", default="prose-val", help="a built-in split or a path (as `duollm eval --data`)")
    p.add_argument("--seqs", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--pick", default="first", choices=("first", "spread"))
    p.add_argument("--budgets", default="1,2,3", help="BIG layers per token, comma-separated")
    p.add_argument("--groups", type=int, default=1, help="G consecutive layers share one choice (0 or 1: none)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16 (autocast, on a GPU only)")
    p.add_argument("--json", action="store_true", help="one JSON object per budget instead of a line")
    p.add_argument("--out", default="", help="with --json: also write the objects to this JSONL file")
    try:
        main(p.parse_args())
    except (DuoError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

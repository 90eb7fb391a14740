"""How far the beam-search oracle and route groups land from the exhaustive oracle, and how long each takes.

    python3 scripts/beam_gap.py RUN [--budgets 6,4] [--widths 1,2,4,8] [--groups 1,2,3] [--seqs 16] [--seq-len 128]
                                    [--mode shared|causal] [--completions big-first,big-last] [--threads N] [--json]

For each budget k (exactly k BIG layers) and each group size g, on the same windows of the run's validation split:
the exhaustive oracle over the (grouped) route set, then a beam of every width W. Prints per row the oracle's
perplexity, its gap to the exhaustive oracle over the same groups and to the ungrouped exhaustive oracle (the true
one), in perplexity, the share of tokens whose loss is above the exhaustive oracle's (by more than 1e-5 nats; in
causal mode a token's past differs too), the routes evaluated per batch (causal: per position, the most)
and the seconds taken (wall, and CPU time of this process: the machine may be shared). Budgets count layers, so a
grouped k must be a sum of whole groups; others are left out with a note. --json prints one object per row.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from duollm.data.corpus import eval_windows, pick_windows, token_array
from duollm.errors import DuoError
from duollm.oracle.beam import causal_beam, shared_beam
from duollm.oracle.causal import causal_search
from duollm.oracle.groups import Groups
from duollm.oracle.search import search_many
from duollm.routing.budget import Budget
from duollm.runs.load import load_run

WORSE = 1e-5  # nats: a token counts as worse than the exhaustive oracle above this (the causal beam matches it to rounding)


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def run_oracle(model, batches, budget, groups, mode, width, completions):
    """Per-token losses (N, T-1) over all batches, and the routes evaluated per batch (mean)."""
    losses, routes = [], []
    for x in batches:
        if width == 0:
            r = causal_search(model, x, budget, groups=groups) if mode == "causal" else search_many(model, x, [budget], groups=groups)[0]
        elif mode == "causal":
            r = causal_beam(model, x, budget, width, groups, completions)
        else:
            r = shared_beam(model, x, budget, width, groups, completions)
        losses.append(r.loss)
        routes.append(r.n_routes)
    return torch.cat(losses), sum(routes) / len(routes)


def main(args) -> None:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    _, model, tok = load_run(Path(args.run), "cpu")
    model.eval()
    L = model.cfg.n_layer
    source = args.split or json.loads((Path(args.run) / "config.json").read_text())["data"]["val"]
    windows = pick_windows(eval_windows(token_array(source, tok), args.seq_len), args.seqs, "first")
    batches = list(windows.split(args.batch_size))
    completions = tuple(c for c in args.completions.split(",") if c)
    try:
        ks = [int(k) for k in args.budgets.split(",")]
        widths = [int(w) for w in args.widths.split(",")]
        gs = [int(g) for g in args.groups.split(",")]
    except ValueError:
        raise DuoError("--budgets, --widths and --groups take integers separated by commas") from None
    if min(widths) < 1:
        raise DuoError("--widths must be >= 1 (the exhaustive search always runs)")
    rows = []
    ppl = lambda loss: math.exp(float(loss.double().mean()))  # noqa: E731
    for k in ks:
        budget = Budget.exactly_big(k)
        exact = None  # the ungrouped exhaustive oracle's losses
        for g in gs:
            groups = Groups.of(L, g)
            if groups.count(budget) == 0:
                print(f"k={k}: groups of {g} cannot meet it (budgets count layers); left out", file=sys.stderr)
                continue
            ref = None
            for w in [0, *widths]:
                (loss, n), wall, cpu = timed(lambda w=w, b=budget, g=groups: run_oracle(model, batches, b, g, args.mode, w, completions))
                ref = loss if w == 0 else ref
                exact = loss if (w == 0 and groups.trivial) else exact
                row = {"k": k, "groups": max(g, 1), "beam": w, "ppl_oracle": ppl(loss), "gap": ppl(loss) - ppl(ref)}
                row["gap_ungrouped"] = ppl(loss) - ppl(exact) if exact is not None else None
                row["worse"] = float((loss > ref + WORSE).double().mean())
                row.update({"routes": round(n, 1), "n_routes": groups.count(budget), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)})
                rows.append(row)
                print(json.dumps(row) if args.json else fmt(row), flush=True)
    if not args.json:
        print(
            f"{args.mode} oracle, {len(windows)} windows x {args.seq_len} tokens ({windows[:, 1:].numel()} predicted), "
            f"{L} layers, completions {','.join(completions)}, batch {args.batch_size}, {torch.get_num_threads()} threads",
            file=sys.stderr,
        )


def fmt(r: dict) -> str:
    beam = "exhaustive" if r["beam"] == 0 else f"beam {r['beam']}"
    gu = f"{r['gap_ungrouped']:+.3f}" if r["gap_ungrouped"] is not None else "-"
    return (
        f"k={r['k']:<3} g={r['groups']:<2} {beam:>10}  ppl {r['ppl_oracle']:8.3f}  gap {r['gap']:+.3f}  vs ungrouped {gu:>7}  "
        f"worse {100 * r['worse']:5.1f}%  routes {r['routes']:8.1f}/{r['n_routes']:<5}  {r['wall_s']:7.1f} s ({r['cpu_s']:.1f} s CPU)"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--budgets", default="6,4", help="BIG-layer counts k, comma-separated")
    p.add_argument("--widths", default="1,2,4,8", help="beam widths, comma-separated")
    p.add_argument("--groups", default="1,2,3", help="group sizes g, comma-separated (1 = none)")
    p.add_argument("--mode", default="shared", choices=["shared", "causal"])
    p.add_argument("--completions", default="big-first,big-last", help="the beam's greedy completions (its score: their minimum)")
    p.add_argument("--split", default="", help="default: the run's validation split")
    p.add_argument("--seqs", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    try:
        main(args)
    except DuoError as e:
        sys.exit(f"beam_gap.py: error: {e}")

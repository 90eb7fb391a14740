"""`duollm demo`: the whole Duo-LLM study, small: train → evaluate → oracle sweep → difficulty → report.

1. trains the tiny Duo model (4 layers; the paper's 12-layer study is the GPU-scale one) on the built-in
   prose with random routing;
2. held-out perplexity of all-big, all-small and random routing, and a unigram floor;
3. the oracle sweep on the first `--oracle-seqs` held-out windows: exactly k BIG layers for k = 0..L and
   unconstrained, shared and causal oracles, fixed and random best-of-N; and the big/skip sweep;
4. the paper router and the oracle-supervised router at half the layers BIG, scored beside the oracles, and
   the label-free choice (each token's route by its prediction, without the label: about the most a router
   could reach);
5. a toy arena (docs/arena.md): the dense model, the dense model of half BIG's FFN FLOPs and the Duo model with
   random-routing training at half BIG's FFN FLOPs (its best fixed route), each trained from scratch on the same
   tokens (the `arena-toy` preset), written into the run (RUN/arena.jsonl, RUN/arena.png);
6. token difficulty against the unconstrained shared oracle, and `RUN/report/report.html`.
Prints each table as soon as its stage ends, and keeps what it has in RUN/demo.json after every stage. On a
2-core CPU it takes about three and a half minutes, the toy arena about 20 s of it (the README holds its
output, checked by CI).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from duollm.analysis.arena import write_arena_figure
from duollm.analysis.difficulty import measure, write_summary
from duollm.analysis.report import build_report
from duollm.analysis.table import read_table
from duollm.cli.arena import format_table
from duollm.cli.train import TrainCommand, resolve
from duollm.data.corpus import eval_windows, pick_windows, token_array
from duollm.eval.evaluate import summarize, token_losses, unigram_losses
from duollm.eval.policy import parse_policy
from duollm.files import write_json
from duollm.flags import Count, Positive
from duollm.oracle.baselines import label_free_summary
from duollm.oracle.job import OracleSpec, run_oracle
from duollm.routing.budget import Budget
from duollm.runs.load import load_run
from duollm.train.arena import ArenaSpec, run_arena
from duollm.train.loop import train
from duollm.train.router import train_router
from duollm.train.router_eval import eval_router
from duollm.train.router_spec import RouterEvalSpec, RouterTrainSpec

DEMO_POLICIES = ("all-big", "random:0.5", "all-small")
DEMO_ENTRANTS = "dense,dense:budget=0.5,duo-random:budget=0.5"  # the toy arena's: entrants of methods/dense.py and duo.py
ARENA_EVAL_TOKENS = 16384  # of each held-out split


@dataclass
class DemoCommand:
    """The whole study, small: train the tiny model, then oracles, routers, difficulty and a report on held-out books."""

    out: str = ""  # run directory; default runs/demo-<date>-<time>
    steps: Count = 0  # training steps; 0 = the tiny preset's
    oracle_seqs: Positive = 32  # held-out windows searched by the oracles
    random: Count = 10  # N of the random best-of-N baseline
    router_steps: Positive = 100  # optimiser steps of the paper router
    arena_tokens: Count = 0  # training tokens of each toy-arena entrant; 0 = the arena-toy preset's
    json: bool = False  # print one JSON object instead of the table
    overrides: dict = field(default_factory=dict)  # dotted config keys, e.g. {"model.n_layer": "2"}


def run_demo(cmd: DemoCommand, show=None) -> dict:
    """Run every stage; return the results (also RUN/demo.json, rewritten after each stage, so a late failure keeps
    what was computed). `show(text)`, when given, receives each table as soon as its stage ends."""
    show = show or (lambda text: None)
    t0 = time.perf_counter()
    out = Path(cmd.out or time.strftime("runs/demo-%Y%m%d-%H%M%S"))
    cfg = resolve(TrainCommand(out=str(out), preset="tiny", steps=cmd.steps, overrides=cmd.overrides))
    res: dict = {"run": str(out), "split": cfg.data.val}

    def stage(**results) -> None:  # one stage done: keep it on disk
        res.update(results, seconds=round(time.perf_counter() - t0, 1))
        write_json(out / "demo.json", res, indent=2)

    stage(train=train(cfg, out, progress=not cmd.json))
    _, model, tok = load_run(out)
    windows = eval_windows(token_array(cfg.data.val, tok), cfg.train.seq_len)
    ppl = {}
    for name in DEMO_POLICIES:
        losses, _ = token_losses(model, windows, parse_policy(name, cfg.model.n_layer))
        ppl[name] = summarize(losses)["ppl"]
    ppl["unigram"] = summarize(unigram_losses(token_array(cfg.data.train, tok), windows, cfg.model.vocab_size))["ppl"]
    stage(ppl=ppl, tokens=int(windows[:, 1:].numel()))
    show(format_ppl(res))
    for key, opts, mode in (("oracle", "big,small", "causal"), ("oracle_skip", "big,skip", "shared")):
        oc = OracleSpec(run=str(out), options=opts, mode=mode, random=cmd.random, seqs=cmd.oracle_seqs)
        stage(**{key: run_oracle(oc, progress=not cmd.json, log=None if cmd.json else lambda line: print(line, file=sys.stderr))})
        show(format_oracle(res[key]))
    oracle = res["oracle"]
    routers = {}
    for kind in ("paper", "supervised"):
        rc = RouterTrainSpec(run=str(out), kind=kind, budget="0.5", steps=cmd.router_steps, batch_size=8, label_seqs=32)
        train_router(rc, progress=not cmd.json)
        routers[kind] = eval_router(RouterEvalSpec(run=str(out), kind=kind, budget="0.5"))
    stage(routers=routers, label_free=run_label_free(out, model, tok, oracle))
    show(format_routers(res))
    spec = ArenaSpec(out=str(out), entrants=DEMO_ENTRANTS, preset="arena-toy", tokens=cmd.arena_tokens, eval_tokens=ARENA_EVAL_TOKENS)
    arena = run_arena(spec)
    write_arena_figure(out)
    stage(arena=arena["rows"])
    show(format_arena(res))
    write_summary(out, measure(read_table(out, "big,small")))
    stage(report=build_report(str(out))["report"])
    t = res["train"]
    show(
        f"report: {res['report']}\n\ntrained {t['steps']} steps at {t['tokens_per_s']:,.0f} tokens/s; "
        f"total {res['seconds']:.0f} s; run in {res['run']}"
    )
    return res


def run_label_free(out: Path, model, tok, oracle: dict) -> dict:
    """The label-free choice at half the layers BIG on the oracle's windows, saved where `duollm report` draws it
    (RUN/label-free-<split>.jsonl), with its gap recovered against the causal oracle like the routers'."""
    k = oracle["n_layer"] // 2
    windows = pick_windows(eval_windows(token_array(oracle["split"], tok), oracle["seq_len"]), oracle["seqs"], oracle["pick"])
    row = {"k": k, **{key: oracle[key] for key in ("split", "seqs", "seq_len", "pick", "dtype")}}
    row.update(label_free_summary(model, windows, Budget.exactly_big(k)))
    (out / f"label-free-{Path(oracle['split']).name.removesuffix('.jsonl')}.jsonl").write_text(json.dumps(row) + "\n")
    ref = next(b for b in oracle["budgets"] if b["k"] == k)
    gap = ref["ppl_fixed"] - ref["ppl_oracle_causal"]
    return {**row, "gap_recovered_causal": (ref["ppl_fixed"] - row["ppl_label_free"]) / gap if gap > 0 else None}


def format_ppl(res: dict) -> str:
    books = " (books Ruth, Jonah, John)" if res["split"] == "prose-val" else ""
    rows = [f"| {name} | {v:.2f} |" for name, v in res["ppl"].items()]
    return "\n".join(
        [f"held-out perplexity on {res['split']}{books}, {res['tokens']:,} tokens:", "", "| policy | ppl |", "|---|---|", *rows]
    )


def format_oracle(s: dict) -> str:
    """One oracle sweep as a markdown table: exactly k BIG layers (the rest SMALL), or exactly s SKIP (the rest BIG)."""
    what, caption = "SKIP layers s (the rest BIG)", "and with SKIP in place of SMALL, on the same windows:"
    if s["options"] == "big,small":
        what = "BIG layers k"
        caption = (
            f"oracles on the first {s['seqs']} held-out windows ({s['tokens']:,} tokens) of the {s['n_layer']}-layer model; "
            f"all-big {s['ppl_all_big']:.2f}, all-small {s['ppl_all_small']:.2f}:"
        )
    modes = [m for m in ("shared", "causal") if m in s["modes"]]
    head = [what, *(f"oracle {m}" for m in modes), "fixed", f"random best-of-{s['random']}"]
    lines = [caption, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in s["budgets"]:
        vals = [r.get(f"ppl_oracle_{m}") for m in modes] + [r["ppl_fixed"], r["ppl_random_best"]]
        lines.append(f"| {r['k']} | " + " | ".join(f"{v:.2f}" if v is not None else "-" for v in vals) + " |")
    return "\n".join(lines)


def format_routers(res: dict) -> str:
    lines = [
        "routers at half the layers BIG; gap recovered = (fixed - router) / (fixed - causal oracle):",
        "",
        "| router | ppl | realised big | gap recovered |",
        "|---|---|---|---|",
    ]
    gap = lambda g: f"{g:.3f}" if g is not None else "-"  # noqa: E731
    for kind, r in res["routers"].items():
        lines.append(f"| {kind} | {r['ppl']:.2f} | {r['realized']['big']:.3f} | {gap(r['gap_recovered'])} |")
    lf = res["label_free"]
    share = lf["k"] / res["oracle"]["n_layer"]
    lines.append(
        f"| label-free choice: each token's route by its prediction, not the label | {lf['ppl_label_free']:.2f} | {share:.3f} | {gap(lf['gap_recovered_causal'])} |"
    )
    return "\n".join(lines)


def format_arena(res: dict) -> str:
    r = res["arena"][0]
    return (
        f"toy arena: each entrant trained from scratch on the same {r['train_tokens']:,} tokens (arena-toy, 4 layers, d = 64), "
        f"evaluated on {r['eval_tokens']['prose-val']:,} tokens of each split:\n\n" + format_table(res["arena"])
    )


def main(cmd: DemoCommand) -> None:
    if cmd.json:
        print(json.dumps(run_demo(cmd)))
    else:
        run_demo(cmd, show=lambda text: print("\n" + text, flush=True))

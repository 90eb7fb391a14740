"""`duollm demo`: train the tiny Duo model on the built-in prose and compare routing policies on held-out books.

Prints held-out perplexity for all-big, all-small and random routing (and a unigram floor), and how long it
all took. On a 2-core CPU it finishes in under five minutes (README records a run).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

DEMO_POLICIES = ("all-big", "random:0.5", "all-small")


@dataclass
class DemoCommand:
    """Train the tiny model on the built-in prose, then compare routing policies on held-out books."""

    out: str = ""  # run directory; default runs/demo-<date>-<time>
    steps: int = 0  # training steps; 0 = the tiny preset's
    json: bool = False  # print one JSON object instead of the table
    overrides: dict = field(default_factory=dict)  # dotted config keys, e.g. {"model.n_layer": "2"}


def run_demo(cmd: DemoCommand) -> dict:
    from duollm.data.corpus import eval_windows, token_array
    from duollm.eval.evaluate import load_run, summarize, token_losses, unigram_losses
    from duollm.eval.policy import parse_policy
    from duollm.train.loop import TrainCommand, resolve, train

    t0 = time.perf_counter()
    out = Path(cmd.out or time.strftime("runs/demo-%Y%m%d-%H%M%S"))
    cfg = resolve(TrainCommand(out=str(out), preset="tiny", steps=cmd.steps, overrides=cmd.overrides))
    trained = train(cfg, out, progress=not cmd.json)
    _, model, tok = load_run(out)
    windows = eval_windows(token_array(cfg.data.val, tok), cfg.train.seq_len)
    ppl = {}
    for name in DEMO_POLICIES:
        losses, _ = token_losses(model, windows, parse_policy(name, cfg.model.n_layer))
        ppl[name] = summarize(losses)["ppl"]
    ppl["unigram"] = summarize(unigram_losses(token_array(cfg.data.train, tok), windows, cfg.model.vocab_size))["ppl"]
    res = {
        "seconds": round(time.perf_counter() - t0, 1),
        "ppl": ppl,
        "run": str(out),
        "split": cfg.data.val,
        "tokens": int(windows[:, 1:].numel()),
        "train": trained,
    }
    (out / "demo.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def main(cmd: DemoCommand) -> None:
    res = run_demo(cmd)
    if cmd.json:
        print(json.dumps(res))
        return
    books = " (books Ruth, Jonah, John)" if res["split"] == "prose-val" else ""
    print(f"\nheld-out perplexity on {res['split']}{books}, {res['tokens']:,} tokens:")
    print("| policy | ppl |\n|---|---|")
    for name, v in res["ppl"].items():
        print(f"| {name} | {v:.2f} |")
    t = res["train"]
    print(f"\ntrained {t['steps']} steps at {t['tokens_per_s']:,.0f} tokens/s; total {res['seconds']:.0f} s; run in {res['run']}")

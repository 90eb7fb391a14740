"""Training rate of the arena's entrants at a preset's size, on random tokens (the rate does not depend on the text),
and the seconds the preset's steps would take: what sized the `arena` preset (docs/arena.md).

    python scripts/arena_rate.py [--preset arena] [--steps 10] [--entrants dense,dense:budget=0.5,...]

Each entrant: 2 warm-up steps, then `--steps` timed steps of the arena's training loop (train/arena.py
`train_entrant`: AdamW, bf16 autocast on a GPU); one line per entrant.
"""

import argparse

import numpy as np
import torch

from duollm.methods import build
from duollm.presets import run_config
from duollm.train.arena import parse_entrants, train_entrant

ENTRANTS = "dense,dense:budget=0.5,duo-random:budget=0.5,duo-joint:budget=0.5,acm:budget=0.5,mod"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="arena")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--entrants", default=ENTRANTS)
    a = p.parse_args()
    cfg = run_config(a.preset)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, 4_000_000).astype(np.uint16)
    per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.train.seq_len
    print(f"{a.preset}: {cfg.train.steps} steps of {per_step:,} tokens on {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}")
    for name, options in parse_entrants(a.entrants):
        torch.manual_seed(0)
        model = build(name, cfg.model, **options).to(device)
        train_entrant(model, tokens, cfg, 2, torch.Generator().manual_seed(0), device)  # warm-up
        r = train_entrant(model, tokens, cfg, a.steps, torch.Generator().manual_seed(1), device)
        secs = cfg.train.steps * per_step / r["tokens_per_s"]
        print(f"{name} {options}: {r['tokens_per_s']:,.0f} tokens/s; the preset's steps: {secs:.0f} s", flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

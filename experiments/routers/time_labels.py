"""How long the expected-loss head's labels and steps take at 12 layers, on the GPU: the causal oracle's table over
every big/small route (2^12 = 4096 a token) for a batch of windows, against the shared oracle's, and
`fit_expected_router`'s steps on a table of that size. The weights are random (a `study-124m`-shaped model): the
times depend on the shapes, not on what the model learned.

    python3 experiments/routers/time_labels.py [--windows 16] [--seq-len 256] [--steps 100] [--preset study-124m]
"""

import argparse
import time

import torch

from duollm.model.transformer import DuoLM
from duollm.oracle.causal import causal_search
from duollm.oracle.search import search_many
from duollm.presets import model_config
from duollm.routers.layerwise import fit_expected_router
from duollm.routers.linear import LinearRouter
from duollm.routing.budget import Budget
from duollm.routing.route import Choice


def timed(fn):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--preset", default="study-124m")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = model_config(args.preset)
    model = DuoLM(cfg).to(dev).eval()
    free = Budget.free((Choice.SMALL, Choice.BIG))
    x = torch.randint(0, cfg.vocab_size, (args.windows, args.seq_len), device=dev)
    n_tok = args.windows * (args.seq_len - 1)
    with torch.autocast(dev, torch.bfloat16, enabled=dev == "cuda"):
        timed(lambda: search_many(model, x[:2, :32], [free], keep=True))  # warm-up
        shared, t_shared = timed(lambda: search_many(model, x, [free], keep=True)[0])
        print(
            f"shared oracle, every route: {t_shared:.1f} s for {args.windows} windows x {args.seq_len} ({n_tok / t_shared:,.0f} tokens/s)"
        )
        causal, t_causal = timed(lambda: causal_search(model, x, free, keep=True))
        print(
            f"causal oracle, every route: {t_causal:.1f} s for {args.windows} windows x {args.seq_len} ({n_tok / t_causal:,.0f} tokens/s)"
        )
    table = causal.candidates.flatten(0, 1).float()  # (N, 4096)
    feats = [torch.randn(len(table), cfg.d_model, device=dev) for _ in range(cfg.n_layer)]
    router = LinearRouter(cfg.n_layer, cfg.d_model, (Choice.SMALL, Choice.BIG))
    with torch.enable_grad():
        _, t_fit = timed(lambda: fit_expected_router(router, feats, table, Choice.BIG, cfg.n_layer // 2, steps=args.steps))
    batch = min(4096, int(len(table) * 0.75))
    print(f"fit_expected_router: {t_fit / args.steps * 1000:.1f} ms a step ({batch} tokens x {table.shape[1]} routes), {args.steps} steps")


if __name__ == "__main__":
    main()

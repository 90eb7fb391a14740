"""The label-free choice with the budget met on average instead of by every token: each token of the first 128
prose-val windows takes, among all 2^L routes, the one whose prediction is closest (cross-entropy) to the all-big
model's plus a price per BIG layer, the price set by bisection so that the tokens take L/2 BIG layers on average.
Against `fixed` (the best route of exactly L/2 BIG layers) and the exact-budget label-free choice.

    python3 experiments/label_free/average_budget.py RUN
"""

import sys
from pathlib import Path

import torch

from duollm.data.corpus import eval_windows, pick_windows, token_array
from duollm.routing.budget import Budget
from duollm.routing.route import Choice
from duollm.runs.load import load_run


def paired(a: torch.Tensor, b: torch.Tensor) -> str:
    d = a - b
    return f"{float(d.mean()):+.4f} ± {float(d.std() / d.numel() ** 0.5):.4f}"


@torch.no_grad()
def main(run: str) -> None:
    cfg, model, tok = load_run(Path(run))
    L, k = cfg.model.n_layer, cfg.model.n_layer // 2
    windows = pick_windows(eval_windows(token_array("prose-val", tok), 128), 128, "first")
    routes = Budget.free((Choice.SMALL, Choice.BIG)).routes(L)  # lexicographic: the last is all-big
    cost = (routes == Choice.BIG).sum(1).double()
    ce, loss = [], []  # (R, tokens) each: cross-entropy against all-big's prediction, and the loss on the label
    for x in windows.split(32):
        lps = torch.stack([model(x, route=r).logits[:, :-1].float().log_softmax(-1) for r in routes])  # (R, B, T-1, V)
        ce.append(-(lps[-1].exp()[None] * lps).sum(-1).flatten(1))
        loss.append(-lps.gather(-1, x[None, :, 1:, None].expand(len(routes), -1, -1, 1)).squeeze(-1).flatten(1))
    ce, loss = torch.cat(ce, 1).double(), torch.cat(loss, 1).double()
    exact = cost == k
    fixed = loss[exact][loss[exact].mean(1).argmin()]
    lo, hi = -5.0, 5.0  # nats per BIG layer: the tokens' mean BIG count falls as the price rises
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost[(ce + mid * cost[:, None]).argmin(0)].mean() > k else (lo, mid)
    pick = (ce + hi * cost[:, None]).argmin(0)
    average = loss.gather(0, pick[None]).squeeze(0)
    exact_pick = loss[exact].gather(0, ce[exact].argmin(0)[None]).squeeze(0)
    counts = torch.bincount(cost[pick].long(), minlength=L + 1).tolist()
    print(f"{len(fixed)} tokens, k = {k} of {L}; minus fixed (nats per token):")
    print(f"  label-free, exact budget: {paired(exact_pick, fixed)}")
    print(f"  label-free, average budget ({float(cost[pick].mean()):.3f} BIG a token; tokens by count {counts}): {paired(average, fixed)}")
    print(f"  shared oracle, exact budget: {paired(loss[exact].min(0).values, fixed)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")

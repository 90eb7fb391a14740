"""Two more label-free per-token route choices on the first 128 prose-val windows, against `fixed` and the shared
oracle (mean loss, nats per token): the route closest (cross-entropy) to the average of all the budget's routes'
predictions, and the route with the lowest entropy. `duollm.oracle.label_free` is the all-big reference.

    python3 experiments/label_free/other_rules.py RUN
"""

import sys
from pathlib import Path

import torch

from duollm.data.corpus import eval_windows, pick_windows, token_array
from duollm.routing.budget import Budget
from duollm.runs.load import load_run


@torch.no_grad()
def main(run: str) -> None:
    cfg, model, tok = load_run(Path(run))
    T, L = 128, cfg.model.n_layer
    windows = pick_windows(eval_windows(token_array("prose-val", tok), T), 128, "first")
    for k in range(1, L):
        routes = Budget.exactly_big(k).routes(L)
        chosen = {"fixed": [], "oracle": [], "closest to the average": [], "lowest entropy": []}
        every = []
        for x in windows.split(32):
            lps = torch.stack([model(x, route=r).logits[:, :-1].float().log_softmax(-1) for r in routes])  # (R, B, T-1, V)
            nll = -lps.gather(-1, x[None, :, 1:, None].expand(len(routes), -1, -1, 1)).squeeze(-1)  # (R, B, T-1)
            every.append(nll)
            average = lps.exp().mean(0)  # (B, T-1, V)
            for name, score in (("closest to the average", -(average * lps).sum(-1)), ("lowest entropy", -(lps.exp() * lps).sum(-1))):
                chosen[name].append(nll.gather(0, score.argmin(0)[None]).squeeze(0))
        every = torch.cat(every, 1)
        chosen["fixed"] = [every[every.mean((1, 2)).argmin()]]
        chosen["oracle"] = [every.min(0).values]
        print(f"k = {k}: " + ", ".join(f"{n} {torch.cat(v).mean():.4f}" for n, v in chosen.items()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")

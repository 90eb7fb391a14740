"""Do difficulty features help the supervised route head at k = L/2? Its ridge fit (`fit_route_router`, the same
held-out selection as `duollm router train --kind supervised`) on 512 causal-oracle-labelled training windows,
from three feature sets: the layer-0 state alone (the router's), difficulty features alone (the entropy, top
log-probability and surprise of the current token under all-small and all-big, with their squares), and both.
Prints each set's held-out loss per ridge strength, the strength chosen, and the fixed route's held-out loss.

    python3 experiments/label_free/difficulty_features.py RUN
"""

import sys
from pathlib import Path

import torch

from duollm.data.corpus import seeded_windows, token_array
from duollm.routers.route_head import RouteRouter, fit_route_router
from duollm.routing.budget import Budget
from duollm.routing.route import Choice
from duollm.runs.load import load_run
from duollm.train.router_fit import oracle_tables


@torch.no_grad()
def difficulty(model, x: torch.Tensor) -> torch.Tensor:
    """(B·(T-1), 6) entropy, top log-probability and surprise of the current token, under all-small and all-big."""
    cols = []
    for c in (Choice.SMALL, Choice.BIG):
        lp = model(x, route=torch.full((model.cfg.n_layer,), c, dtype=torch.uint8)).logits.float().log_softmax(-1)
        nll = -lp[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1)
        surprise = torch.cat([torch.zeros(len(x), 1), nll], 1)  # at t: the loss of x_t, known once x_t arrives
        cols += [-(lp.exp() * lp).sum(-1), lp.max(-1).values, surprise]
    return torch.stack(cols, -1)[:, :-1].flatten(0, 1)


def main(run: str, n: int = 512) -> None:
    torch.manual_seed(0)
    cfg, model, tok = load_run(Path(run))
    windows = seeded_windows(token_array(cfg.data.train, tok), n, cfg.train.seq_len, 0)
    budget = Budget.exactly_big(cfg.model.n_layer // 2)
    feats, table = oracle_tables(model, windows, budget, "causal", 128)
    extra = torch.cat([difficulty(model, x) for x in windows.split(128)])
    extra = torch.cat([extra, extra**2], 1)
    extra = (extra - extra.mean(0)) / extra.std(0)
    for name, X in (("layer-0 state", feats), ("difficulty", extra), ("both", torch.cat([feats, extra], 1))):
        fit = fit_route_router(RouteRouter(budget.routes(cfg.model.n_layer), X.shape[1]), X, table)
        scores = ", ".join(f"{k} {v:.5f}" for k, v in fit["ridge_scores"].items())
        print(f"{name}: held-out loss by ridge {scores}; chosen {fit['ridge']}; fixed {fit['holdout_fixed_loss']:.5f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")

"""How each kind of router is fitted, for `duollm router train` (train/router.py): the oracle's labels, the paper's
training, and one table of heads (`HEADS`), each a function of one `Job` that returns the router and what its fit
measured. Calibration and saving follow in `train_router`, the same for every head.

- `paper`: the paper's training (arXiv:2410.10846 §2): soft routing through the frozen model, an annealed inverse
  temperature, CE + α · the budget penalty;
- `route`: a ridge regression from the layer-0 state to every route's loss under the exact budget (route_head.py);
- `priced`: every route, and a price per counted layer that meets the budget on average (route_head.py);
- `layer`: the paper router's shape fitted to the value of the counted choice at each layer (layerwise.py);
- `expected`: the paper router's shape trained on the expected loss over the oracle's table (layerwise.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

import torch
from tqdm import tqdm

from duollm.analysis.routers import whole_layers
from duollm.data.corpus import sample_batch, seeded_windows
from duollm.errors import DuoError
from duollm.oracle.causal import causal_search
from duollm.oracle.search import search_many
from duollm.routers.calibrate import realised_on
from duollm.routers.layerwise import fit_expected_router, fit_layer_router, flip_values, mean_values, teacher_states
from duollm.routers.linear import LinearRouter, budget_penalty, constrained
from duollm.routers.route_head import RouteRouter, fit_priced_router, fit_route_router, layer0_states, set_price
from duollm.routing.budget import Budget, parse_options
from duollm.routing.sample import random_routes
from duollm.runs.load import autocast
from duollm.train.router_spec import RouterTrainSpec


@dataclass
class Job:
    """What every head needs: the command, the frozen model, the training tokens, the budget, the windows."""

    cmd: object  # RouterTrainSpec
    model: torch.nn.Module
    tokens: object  # the training split's token array
    target: dict[int, float]  # {Choice: fraction}
    calib: torch.Tensor  # (n, T) calibration windows
    whole: Budget  # the budget in whole counted layers per token (exactly k per token)
    L: int
    T: int
    d_model: int
    device: str
    amp: AbstractContextManager
    progress: bool

    def label_windows(self) -> torch.Tensor:
        return seeded_windows(self.tokens, self.cmd.label_seqs, self.T, self.cmd.seed)


def _whole_spend(target: dict[int, float], counted: int, n_layer: int, budget: str, why: str) -> int:
    """The budget's counted layers per token as a whole number, for a head that falls back to (or compares with) a
    fixed route of exactly that many; DuoError starting with `why` when it is not whole."""
    spend = whole_layers(target[counted] * n_layer)
    if spend is None:
        raise DuoError(f"{why}: --budget {budget} x {n_layer} layers must be whole layers")
    return spend


def train_paper(model, router: LinearRouter, tokens, target: dict[int, float], cmd: RouterTrainSpec, T: int, progress: bool) -> list[float]:
    """Soft routing with an annealed inverse temperature, CE + α · budget penalty. Returns the logged losses."""
    dev = next(model.parameters()).device
    model.requires_grad_(cmd.train_base)
    groups = [{"params": router.parameters(), "lr": cmd.lr}]
    if cmd.train_base:
        groups.append({"params": model.parameters(), "lr": cmd.lr / 10})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cmd.seed)
    router.soft, losses = True, []
    for step in tqdm(range(cmd.steps), desc="router", disable=not progress):
        router.beta.fill_(cmd.beta_max ** (step / max(1, cmd.steps - 1)))  # 1 → beta_max, geometric
        x = sample_batch(tokens, cmd.batch_size, T + 1, gen).to(dev)  # (B, T+1)
        probs = []

        def soft(l, u, probs=probs):
            probs.append(router.probs(l, u))  # (B, T, K)
            return router.spread(probs[-1])

        with autocast(cmd.dtype, str(dev)):  # the forward only; backward runs in the forward's dtypes
            out = model(x[:, :-1], router=soft, targets=x[:, 1:])
            loss = out.loss + cmd.alpha * budget_penalty(probs, router.options, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(out.loss.item())
    router.soft = False
    model.requires_grad_(False)
    return losses


def tune(model, router: LinearRouter, tokens, target: dict[int, float], cmd: RouterTrainSpec, T: int, progress: bool, fit: dict):
    """`--tune N`: N steps of the paper's training (`train_paper`, the base frozen) from the scores a layer or expected
    head fitted on the oracle's table, before calibration; the table's start, the model's own states and contexts."""
    if cmd.tune:
        losses = train_paper(model, router, tokens, target, replace(cmd, steps=cmd.tune, train_base=False), T, progress)
        fit["tune"] = {"steps": cmd.tune, "first_loss": losses[0], "final_loss": losses[-1]}


def _labelled(model, windows: torch.Tensor, budget: Budget, labels: str, batch_size: int):
    """(batch on the device, oracle result with every route's loss kept) for each batch of label windows."""
    dev = next(model.parameters()).device
    for i in range(0, len(windows), batch_size):
        x = windows[i : i + batch_size].to(dev)
        yield x, causal_search(model, x, budget, keep=True) if labels == "causal" else search_many(model, x, [budget], keep=True)[0]


@torch.no_grad()
def oracle_tables(model, windows: torch.Tensor, budget: Budget, labels: str, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-0 states (N, C) of the predicted tokens and every route's loss for them (N, R), from the oracle."""
    feats, losses = [], []
    for x, res in _labelled(model, windows, budget, labels, batch_size):
        feats.append(layer0_states(model, x)[:, :-1].flatten(0, 1).float().cpu())  # (b·(T-1), C)
        losses.append(res.candidates.flatten(0, 1).float().cpu())  # (b·(T-1), R)
    return torch.cat(feats), torch.cat(losses)


@torch.no_grad()
def layer_tables(
    model,
    windows: torch.Tensor,
    options: tuple[int, ...],
    counted: int,
    labels: str,
    batch_size: int = 16,
    values: str = "flip",
    seed: int = 0,
    keep: bool = False,
):
    """Per layer the states (N, C) and the value (N, L) of `counted` at each layer: `flip` under the free oracle's
    routes, `mean` averaged over every route, the states under random routes (routers/layerwise.py); with `keep`,
    also every route's loss (N, 2^L), else None."""
    feats, vals, tables = [], [], []
    for i, (x, res) in enumerate(_labelled(model, windows, Budget.free(options), labels, batch_size)):
        cand = res.candidates.flatten(0, 1).float()
        if values == "mean":
            feats.append(teacher_states(model, x, random_routes(res.route.shape, options, seed + i).to(x.device)))
            vals.append(mean_values(cand, options, counted).cpu())
        else:
            feats.append(teacher_states(model, x, res.route))
            vals.append(flip_values(cand, res.route.flatten(0, 1), options, counted).cpu())
        if keep:
            tables.append(cand.cpu())
    return [torch.cat(f) for f in zip(*feats, strict=True)], torch.cat(vals), torch.cat(tables) if keep else None


def fit_paper(job: Job):
    router = LinearRouter(job.L, job.d_model, parse_options(job.cmd.options)).to(job.device)
    return router, train_paper(job.model, router, job.tokens, job.target, job.cmd, job.T, job.progress), {}, None


def fit_expected(job: Job):
    """The paper's objective, its expectation taken over the oracle's table of every route's loss."""
    cmd = job.cmd
    label_windows = job.label_windows()
    router = LinearRouter(job.L, job.d_model, parse_options(cmd.options))
    counted = constrained(router.options)[0]
    spend = _whole_spend(job.target, counted, job.L, cmd.budget, "--head expected compares with the fixed route")
    with job.amp:
        feats, _, table = layer_tables(
            job.model, label_windows, router.options, counted, cmd.labels, cmd.label_batch_size, "mean", cmd.seed, keep=True
        )
    feats, table = [f.to(job.device) for f in feats], table.to(job.device)  # the steps run where the model does
    fit = fit_expected_router(router, feats, table, counted, spend, cmd.steps, cmd.lr, cmd.alpha, seed=cmd.seed)
    del feats, table
    router.to(job.device)
    return router, [fit["holdout_fixed_loss"], fit["holdout_loss"]], fit, None


def fit_layer(job: Job):
    cmd = job.cmd
    label_windows = job.label_windows()
    router = LinearRouter(job.L, job.d_model, parse_options(cmd.options)).to(job.device)
    counted = constrained(router.options)[0]
    spend = _whole_spend(job.target, counted, job.L, cmd.budget, "--shrink compares with the fixed route") if cmd.shrink else 0
    with job.amp:
        feats, values, table = layer_tables(
            job.model, label_windows, router.options, counted, cmd.labels, cmd.label_batch_size, cmd.values, cmd.seed, cmd.shrink
        )
    with torch.no_grad():
        fit = fit_layer_router(router.cpu(), feats, values, counted, table=table, spend=spend)
    router.to(job.device)
    L = job.L
    return router, [sum(fit["holdout_mse_constant"]) / L, sum(fit["holdout_mse"]) / L], fit, None  # squared error: constant, fit


def fit_priced(job: Job):
    """Every route, labelled by the oracle without a budget; a price per counted layer meets the budget on average."""
    cmd = job.cmd
    label_windows = job.label_windows()
    free = Budget.free(parse_options(cmd.options))
    router = RouteRouter(free.routes(job.L), job.d_model).to(job.device)
    counted = constrained(router.options)[0]
    spend = _whole_spend(job.target, counted, job.L, cmd.budget, "--head priced falls back to a fixed route")
    with job.amp:
        feats, table = oracle_tables(job.model, label_windows, free, cmd.labels, cmd.label_batch_size)
    fit = fit_priced_router(router, feats.to(job.device), table.to(job.device), spend)
    losses = [fit["holdout_fixed_loss"], fit["holdout_loss"]]
    with job.amp:
        if fit["ridge"] != float("inf"):  # priced again on the calibration windows, as the paper router's offsets
            set_price(router, layer0_states(job.model, job.calib.to(job.device)).flatten(0, 1), spend)
            fit["price"] = float(router.price)
        real = realised_on(job.model, router, job.calib)
    return router, losses, fit, real


def fit_route(job: Job):
    """Every route of the exact budget, its loss predicted from the layer-0 state; each token takes its best."""
    cmd = job.cmd
    label_windows = job.label_windows()
    if any(whole_layers(job.target[c] * job.L) is None for c in job.whole.targets()):
        raise DuoError(f"the supervised router keeps exact budgets: --budget {cmd.budget} x {job.L} layers must be whole layers")
    router = RouteRouter(job.whole.routes(job.L), job.d_model).to(job.device)
    with job.amp:
        feats, table = oracle_tables(job.model, label_windows, job.whole, cmd.labels, cmd.label_batch_size)
    fit = fit_route_router(router, feats.to(job.device), table.to(job.device))
    with job.amp:
        real = realised_on(job.model, router, job.calib)
    return router, [fit["holdout_fixed_loss"], fit["holdout_loss"]], fit, real


# --kind paper, or --kind supervised --head NAME → (router, [first, final] loss, what the fit measured, realised
# fractions on the calibration windows, or None where calibration follows)
HEADS = {"paper": fit_paper, "route": fit_route, "layer": fit_layer, "priced": fit_priced, "expected": fit_expected}

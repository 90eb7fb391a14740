"""`duollm router train` / `duollm router eval`: learned routers on a trained run (Duo-LLM stage 3, and beyond).

    duollm router train --run RUN --kind paper --budget 0.5        # big fraction 0.5 (options big,small)
    duollm router train --run RUN --kind supervised --budget 0.5   # on causal-oracle labels
    duollm router eval --run RUN --kind supervised --budget 0.5    # → ppl, realised fractions, gap recovered
    duollm router calibrate --run RUN --name paper-0.5 --data code # its offsets again, for text of another domain
    duollm eval --run RUN --policy router:supervised-0.5           # like any other policy

Budgets: `--budget F` is the fraction of (token, layer) choices taking the counted choice — BIG for
`--options big,small`, SKIP for `big,skip` — or `B,M,S` fractions for `big,small,skip`.

- paper (arXiv:2410.10846 §2; docs/design.md §2): the base model frozen (unless `--train-base`), the router's
  soft weights softmax(β·logits) mix the modules' outputs, β grows geometrically from 1 to `--beta-max`, and the
  loss is CE + α·Σ_c (mean P_c − target_c)² over the constrained choices.
- supervised (ours, routers/route_head.py): the causal oracle (or the shared one, `--labels shared`) with exactly
  F·L counted layers per token runs on `--label-seqs` training windows and keeps every route's loss for every
  token; a ridge regression from the token's layer-0 state to those losses picks each token's route.
  `--head layer` (routers/layerwise.py) instead fits the paper router's shape, one score per layer from the
  state that layer sees, to the value of the counted choice there under the causal oracle without a budget,
  and is calibrated like the paper router (any fraction, met on average); with `--values mean`, to that value
  averaged over every route, from the states under random routes (`--shrink`: those scores shrunk towards each
  layer's mean by the factor with the lowest held-out loss over every route, or the fixed route). `--head priced` (routers/route_head.py)
  labels every route (the oracle without a budget), and each token takes the route with the lowest predicted
  loss plus a price per counted layer, the price set on the calibration windows so that the budget is met on
  average: hard tokens can take more BIG layers than easy ones. Without a clear held-out gain it is the fixed route.
  `--head expected` (routers/layerwise.py) trains the paper router's shape on the paper's objective, `--steps`
  Adam steps of expected loss plus the budget penalty, with the expectation taken exactly over the oracle's table
  of every route's loss (the oracle without a budget) instead of through a soft mixture of the modules; it starts
  at the fixed route and is calibrated like the paper router. On the causal oracle's labels it is the best router on
  the demo model (docs/results.md). `--tune N` continues a layer or expected head with N steps of the paper's training.
The paper router is then calibrated (routers/calibrate.py) on `--calib-seqs` other training windows so that
the hard router spends the budget (the supervised one meets it exactly by construction); both are saved to
`RUN/routers/<name>/` (safetensors + JSON). `router eval` scores a
router on the oracle's windows when `RUN/oracle/<options>/` exists (so that `gap_recovered` =
(ppl_fixed − ppl_router) / (ppl_fixed − ppl_causal_oracle) compares like with like), and writes
`eval-<split>.json` and `tokens-<split>.jsonl.gz` (per token: loss and route) beside the router.
A calibrated router (the paper's, or the layer head) spends its budget on average over the text it was calibrated
on, so it drifts on another domain (the study's, calibrated on the training mix: 0.533 SKIP on code for a target
of 0.5). `router calibrate` sets its offsets again on windows of the text it will serve, as a new router.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from duollm.data.corpus import seeded_windows
from duollm.errors import DuoError
from duollm.files import atomic_path, write_json
from duollm.flags import Count, NonNegative, Positive, PositiveFloat
from duollm.routers.linear import LinearRouter, budget_penalty, realised
from duollm.routers.storage import load_named, save_router
from duollm.routing.budget import Budget, parse_mix, parse_options
from duollm.routing.route import Choice, format_route


@dataclass
class RouterTrainCommand:
    """Train a router (the paper's, or one supervised by the oracle) and calibrate it to the budget."""

    run: str  # run directory (from duollm train)
    kind: str = "paper"  # paper | supervised
    budget: str = "0.5"  # fraction of BIG (big,small) or SKIP (big,skip) choices; B,M,S for big,small,skip
    options: str = "big,small"  # big,small | big,skip | big,small,skip
    name: str = ""  # saved as RUN/routers/NAME; default KIND-BUDGET (plus the options when not big,small)
    steps: Count = 300  # optimiser steps
    lr: PositiveFloat = 1e-2  # router learning rate
    batch_size: Positive = 16  # windows per step (paper)
    alpha: NonNegative = 10.0  # weight of the budget penalty (paper)
    beta_max: PositiveFloat = 20.0  # final inverse temperature (paper)
    train_base: bool = False  # also train the base model's weights, at lr/10 (paper)
    labels: str = "causal"  # oracle that labels the supervised router: causal | shared
    head: str = "route"  # supervised: route (a whole route, exact budget) | layer (per layer, calibrated) | priced (a whole route, a price per counted layer) | expected (per layer, the expected loss over every route)
    values: str = "flip"  # layer head's targets: flip (at the oracle's route) | mean (over every route; random-route states)
    shrink: bool = False  # layer head with --values mean: shrink its scores towards each layer's mean, the factor chosen by held-out loss over every route
    tune: Count = 0  # layer or expected head: then this many steps of the paper's objective through the model, from the fitted scores
    label_seqs: Positive = 64  # training windows labelled by the oracle (supervised) ...
    label_batch_size: Positive = 64  # ... this many per oracle search (the causal one steps position by position)
    calib_seqs: Positive = 16  # training windows for budget calibration
    seq_len: Count = 0  # window length; 0 = the run's train.seq_len
    dtype: str = "fp32"  # fp32 (exact) | bf16 (autocast on a GPU): training, labels and calibration
    seed: Count = 0
    json: bool = False  # print one JSON object instead of a line


@dataclass
class RouterEvalCommand:
    """Perplexity, realised budget and gap recovered of a trained router on held-out text."""

    run: str  # run directory
    name: str = ""  # router under RUN/routers/; or give --kind and --budget
    kind: str = "paper"
    budget: str = "0.5"
    options: str = "big,small"
    split: str = ""  # built-in split; default the oracle's (or the run's validation split) ...
    data: str = ""  # ... or a user's text file, folder or .jsonl
    seqs: Count = 0  # windows; 0 = the oracle's count (or all) ...
    pick: str = ""  # ... the first ones or spread evenly over the split: first | spread; default the oracle's (or first)
    seq_len: Count = 0  # 0 = the oracle's (or the run's train.seq_len)
    batch_size: Positive = 16
    oracle: str = ""  # oracle folder to compare with; default RUN/oracle/<options>
    dtype: str = ""  # fp32 | bf16 (autocast on a GPU); default the oracle's, so the gap compares like with like (or fp32)
    json: bool = False  # print one JSON object instead of a line


@dataclass
class RouterCalibrateCommand:
    """Calibrate a trained router again on other text, the domain it will serve, and save it as a new router."""

    run: str  # run directory (from duollm train)
    name: str  # the router to calibrate: RUN/routers/NAME (a paper or layer-head router)
    data: str  # text to calibrate on: a built-in source (prose, code, mix) or a path, as `duollm train --data`
    out: str = ""  # the new router's name; default NAME-cal-DATA (DATA: the source's file name, a .jsonl without it)
    seqs: Positive = 16  # windows of the text, drawn at random
    seq_len: Count = 0  # 0 = the router's training windows
    dtype: str = ""  # fp32 | bf16 (autocast on a GPU); default the router's
    seed: Count = 0  # draws the windows
    json: bool = False  # print the new router's JSON instead of a line


def parse_target(budget: str, options: str) -> dict[int, float]:
    """`0.5` (+ options) → {Choice: fraction} for every option (routing.budget.parse_mix); DuoError when malformed."""
    try:
        return parse_mix(budget, options)
    except ValueError as e:
        raise DuoError(f"bad --budget {budget!r}: {e}") from None


def exact_budget(target: dict[int, float], options: str, n_layer: int) -> Budget:
    """The oracle budget with round(fraction · L) counted layers per token."""
    if options == "big,small":
        return Budget.exactly_big(round(target[Choice.BIG] * n_layer))
    if options == "big,skip":
        return Budget.exactly_skip(round(target[Choice.SKIP] * n_layer))
    b, s = round(target[Choice.BIG] * n_layer), round(target[Choice.SKIP] * n_layer)
    return Budget.counts(big=b, small=n_layer - b - s, skip=s)


def router_name(kind: str, budget: str, options: str) -> str:
    return f"{kind}-{budget}" + ("" if options == "big,small" else f"-{options.replace(',', '-')}")


def _whole_spend(target: dict[int, float], counted: int, n_layer: int, budget: str, why: str) -> int:
    """The budget's counted layers per token as a whole number, for a head that falls back to (or compares with) a
    fixed route of exactly that many; DuoError starting with `why` when it is not whole."""
    from duollm.analysis.routers import whole_layers

    spend = whole_layers(target[counted] * n_layer)
    if spend is None:
        raise DuoError(f"{why}: --budget {budget} x {n_layer} layers must be whole layers")
    return spend


def train_paper(
    model, router: LinearRouter, tokens, target: dict[int, float], cmd: RouterTrainCommand, T: int, progress: bool
) -> list[float]:
    """Soft routing with an annealed inverse temperature, CE + α · budget penalty. Returns the logged losses."""
    from tqdm import tqdm

    from duollm.data.corpus import sample_batch
    from duollm.runs.load import autocast

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


def _tune(model, router: LinearRouter, tokens, target: dict[int, float], cmd: RouterTrainCommand, T: int, progress: bool, fit: dict):
    """`--tune N`: N steps of the paper's training (`train_paper`, the base frozen) from the scores a layer or expected
    head fitted on the oracle's table, before calibration; the table's start, the model's own states and contexts."""
    if cmd.tune:
        from dataclasses import replace

        losses = train_paper(model, router, tokens, target, replace(cmd, steps=cmd.tune, train_base=False), T, progress)
        fit["tune"] = {"steps": cmd.tune, "first_loss": losses[0], "final_loss": losses[-1]}


def _labelled(model, windows: torch.Tensor, budget: Budget, labels: str, batch_size: int):
    """(batch on the device, oracle result with every route's loss kept) for each batch of label windows."""
    from duollm.oracle.causal import causal_search
    from duollm.oracle.search import search_many

    dev = next(model.parameters()).device
    for i in range(0, len(windows), batch_size):
        x = windows[i : i + batch_size].to(dev)
        yield x, causal_search(model, x, budget, keep=True) if labels == "causal" else search_many(model, x, [budget], keep=True)[0]


@torch.no_grad()
def oracle_tables(model, windows: torch.Tensor, budget: Budget, labels: str, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-0 states (N, C) of the predicted tokens and every route's loss for them (N, R), from the oracle."""
    from duollm.routers.route_head import layer0_states

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
    from duollm.routers.layerwise import flip_values, mean_values, teacher_states
    from duollm.routing.sample import random_routes

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


def train_router(cmd: RouterTrainCommand, progress: bool = True) -> dict:
    from duollm.analysis.routers import whole_layers
    from duollm.data.corpus import token_array
    from duollm.routers.calibrate import calibrate, realised_on
    from duollm.routers.layerwise import fit_layer_router
    from duollm.routers.linear import constrained
    from duollm.routers.route_head import RouteRouter, fit_priced_router, fit_route_router, layer0_states, set_price
    from duollm.runs.load import autocast, load_run

    if cmd.kind not in ("paper", "supervised"):
        raise DuoError(f"--kind must be paper or supervised, got {cmd.kind!r}")
    if cmd.labels not in ("causal", "shared"):
        raise DuoError(f"--labels must be causal or shared, got {cmd.labels!r}")
    if cmd.head not in ("route", "layer", "priced", "expected"):
        raise DuoError(f"--head must be route, layer, priced or expected, got {cmd.head!r}")
    if cmd.values not in ("flip", "mean"):
        raise DuoError(f"--values must be flip or mean, got {cmd.values!r}")
    if cmd.shrink and (cmd.head, cmd.values) != ("layer", "mean"):
        raise DuoError("--shrink is for the layer head with mean values: give --head layer --values mean with it")
    if cmd.head in ("layer", "priced", "expected") and len(parse_options(cmd.options)) != 2:
        raise DuoError(f"--head {cmd.head} counts one choice per layer: give two options (big,small or big,skip), not {cmd.options}")
    if cmd.tune and (cmd.kind, cmd.head) not in (("supervised", "layer"), ("supervised", "expected")):
        raise DuoError(
            "--tune continues a layer or expected head with the paper's objective: give --kind supervised --head layer or expected"
        )
    if cmd.tune < 0:
        raise DuoError(f"--tune must be >= 0, got {cmd.tune}")
    if min(cmd.steps, cmd.label_seqs, cmd.calib_seqs, cmd.batch_size, cmd.label_batch_size) < 1:
        raise DuoError("--steps, --label-seqs, --calib-seqs, --batch-size and --label-batch-size must be >= 1")
    target = parse_target(cmd.budget, cmd.options)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp = autocast(cmd.dtype, device)
    cfg, model, tok = load_run(Path(cmd.run), device)
    model.eval().requires_grad_(False)
    L, T = cfg.model.n_layer, cmd.seq_len or cfg.train.seq_len
    exact = exact_budget(target, cmd.options, L)
    try:
        exact.check(L)
    except ValueError as e:
        raise DuoError(str(e)) from None
    torch.manual_seed(cmd.seed)
    tokens = token_array(cfg.data.train, tok)
    calib = seeded_windows(tokens, cmd.calib_seqs, T, cmd.seed + 1)
    t0 = time.perf_counter()
    if cmd.kind == "paper":
        router = LinearRouter(L, cfg.model.d_model, parse_options(cmd.options)).to(device)
        losses, fit = train_paper(model, router, tokens, target, cmd, T, progress), {}
    else:
        label_windows = seeded_windows(tokens, cmd.label_seqs, T, cmd.seed)
        if cmd.head == "expected":  # the paper's objective, its expectation taken over the oracle's table
            from duollm.routers.layerwise import fit_expected_router

            router = LinearRouter(L, cfg.model.d_model, parse_options(cmd.options))
            counted = constrained(router.options)[0]
            spend = _whole_spend(target, counted, L, cmd.budget, "--head expected compares with the fixed route")
            with amp:
                feats, _, table = layer_tables(
                    model, label_windows, router.options, counted, cmd.labels, cmd.label_batch_size, "mean", cmd.seed, keep=True
                )
            feats, table = [f.to(device) for f in feats], table.to(device)  # the steps run where the model does
            fit = fit_expected_router(router, feats, table, counted, spend, cmd.steps, cmd.lr, cmd.alpha, seed=cmd.seed)
            del feats, table
            router.to(device)
            losses = [fit["holdout_fixed_loss"], fit["holdout_loss"]]
        elif cmd.head == "layer":
            router = LinearRouter(L, cfg.model.d_model, parse_options(cmd.options)).to(device)
            counted = constrained(router.options)[0]
            spend = _whole_spend(target, counted, L, cmd.budget, "--shrink compares with the fixed route") if cmd.shrink else 0
            with amp:
                feats, values, table = layer_tables(
                    model, label_windows, router.options, counted, cmd.labels, cmd.label_batch_size, cmd.values, cmd.seed, cmd.shrink
                )
            with torch.no_grad():
                fit = fit_layer_router(router.cpu(), feats, values, counted, table=table, spend=spend)
            router.to(device)
            losses = [sum(fit["holdout_mse_constant"]) / L, sum(fit["holdout_mse"]) / L]  # mean squared error: constant, fit
        elif cmd.head == "priced":  # every route, labelled by the oracle without a budget; a price meets it on average
            free = Budget.free(parse_options(cmd.options))
            router = RouteRouter(free.routes(L), cfg.model.d_model).to(device)
            counted = constrained(router.options)[0]
            spend = _whole_spend(target, counted, L, cmd.budget, "--head priced falls back to a fixed route")
            with amp:
                feats, table = oracle_tables(model, label_windows, free, cmd.labels, cmd.label_batch_size)
            fit = fit_priced_router(router, feats.to(device), table.to(device), spend)
            losses = [fit["holdout_fixed_loss"], fit["holdout_loss"]]
            with amp:
                if fit["ridge"] != float("inf"):  # priced again on the calibration windows, as the paper router's offsets
                    set_price(router, layer0_states(model, calib.to(device)).flatten(0, 1), spend)
                    fit["price"] = float(router.price)
                real = realised_on(model, router, calib)
        else:
            if any(whole_layers(target[c] * L) is None for c in exact.targets()):
                raise DuoError(f"the supervised router keeps exact budgets: --budget {cmd.budget} x {L} layers must be whole layers")
            router = RouteRouter(exact.routes(L), cfg.model.d_model).to(device)
            with amp:
                feats, table = oracle_tables(model, label_windows, exact, cmd.labels, cmd.label_batch_size)
            fit = fit_route_router(router, feats.to(device), table.to(device))
            losses = [fit["holdout_fixed_loss"], fit["holdout_loss"]]
            with amp:
                real = realised_on(model, router, calib)
    if isinstance(router, LinearRouter):  # the paper router and the layer-wise heads: (--tune, then) offsets on `calib`
        _tune(model, router, tokens, target, cmd, T, progress, fit)
        with amp:
            real = calibrate(model, router, calib, target)
        fit["offset"] = router.offset.tolist()
    head = f"-{cmd.head}" if cmd.kind == "supervised" and cmd.head != "route" else ""
    head += "-mean" if cmd.kind == "supervised" and cmd.head == "layer" and cmd.values == "mean" else ""
    head += "-shrink" if cmd.kind == "supervised" and cmd.shrink else ""
    head += "-tuned" if cmd.tune else ""
    head += "-shared" if cmd.kind == "supervised" and cmd.labels == "shared" else ""  # never the causal-labelled one's name
    name = cmd.name or router_name(cmd.kind + head, cmd.budget, cmd.options)
    meta = {
        "kind": cmd.kind,
        "name": name,
        "budget": cmd.budget,
        "options_flag": cmd.options,
        "target": {Choice(c).name.lower(): v for c, v in target.items()},
        "calibration": {"seqs": cmd.calib_seqs, "realized": real, **fit},
        "train": {"steps": cmd.steps, "first_loss": losses[0], "final_loss": losses[-1], "seconds": round(time.perf_counter() - t0, 1)},
        "config": {k: v for k, v in vars(cmd).items() if k not in ("run", "json")},
    }
    if cmd.kind == "paper":  # a router trained with its base writes the base it needs beside it
        meta["train_base"] = cmd.train_base
    save_router(router, Path(cmd.run) / "routers" / name, meta)
    if cmd.train_base:
        from duollm.runs.checkpoint import save_weights

        save_weights(Path(cmd.run) / "routers" / name / "model.safetensors", model, config="{}")
    return meta


def calibrate_router(cmd: RouterCalibrateCommand) -> dict:
    from duollm.data.corpus import token_array
    from duollm.routers.calibrate import calibrate
    from duollm.routers.linear import NAMES
    from duollm.runs.load import autocast, check_dtype, load_run

    if cmd.dtype:
        check_dtype(cmd.dtype)
    if cmd.seqs < 1:
        raise DuoError(f"--seqs must be >= 1, got {cmd.seqs}")
    run = Path(cmd.run)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, model, tok = load_run(run, device)
    router, info = load_named(run, cmd.name, device, model)
    if not isinstance(router, LinearRouter):
        raise DuoError(f"router {cmd.name!r} keeps its budget exactly, token by token (a route head): it has nothing to calibrate")
    out = cmd.out or f"{cmd.name}-cal-{Path(cmd.data).name.removesuffix('.jsonl')}"
    folder = run / "routers" / out
    if folder.exists():
        raise DuoError(f"{folder} exists; give the new router another name with --out")
    conf = info.get("config", {})
    T = cmd.seq_len or conf.get("seq_len") or cfg.train.seq_len
    windows = seeded_windows(token_array(cmd.data, tok), cmd.seqs, T, cmd.seed + 1)
    target = {NAMES[c]: v for c, v in info["target"].items()}
    with autocast(cmd.dtype or conf.get("dtype", "fp32"), device):
        real = calibrate(model, router, windows, target)
    meta = {k: v for k, v in info.items() if k != "class"}
    meta["name"] = out
    meta["calibration"] = {"seqs": cmd.seqs, "data": cmd.data, "realized": real, "offset": router.offset.tolist(), "seed": cmd.seed}
    meta["calibrated_from"] = {"name": cmd.name, "calibration": info.get("calibration")}
    save_router(router, folder, meta)
    if (run / "routers" / cmd.name / "model.safetensors").exists():  # a router trained with its base keeps that base
        import shutil

        shutil.copyfile(run / "routers" / cmd.name / "model.safetensors", folder / "model.safetensors")
    return meta


def eval_router(cmd: RouterEvalCommand) -> dict:
    from duollm.analysis.routers import Router, window_key
    from duollm.data.corpus import eval_windows, pick_windows, token_array
    from duollm.eval.evaluate import token_losses
    from duollm.eval.policy import Policy
    from duollm.runs.load import autocast, check_dtype, load_run

    if cmd.dtype:
        check_dtype(cmd.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, model, tok = load_run(Path(cmd.run), device)
    name = cmd.name or router_name(cmd.kind, cmd.budget, cmd.options)
    router, info = load_named(Path(cmd.run), name, device, model)
    opts = info.get("options_flag", "big,small")
    summary_file = (Path(cmd.oracle) if cmd.oracle else Path(cmd.run) / "oracle" / opts.replace(",", "-")) / "summary.json"
    if cmd.oracle and not summary_file.exists():
        raise DuoError(f"--oracle {cmd.oracle} holds no summary.json; run `duollm oracle --out {cmd.oracle}` first")
    oracle = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    source = cmd.data or cmd.split or oracle.get("split") or cfg.data.val
    same = source == oracle.get("split")
    T = cmd.seq_len or (oracle["seq_len"] if same else cfg.train.seq_len)
    n = cmd.seqs or (oracle["seqs"] if same else 0)
    windows = eval_windows(token_array(source, tok), T)
    pick = cmd.pick or (oracle.get("pick", "first") if same else "first")  # by default the oracle's windows
    windows = pick_windows(windows, n, pick) if n else windows
    dtype = cmd.dtype or (oracle.get("dtype", "fp32") if same else "fp32")  # by default the oracle's precision
    with torch.no_grad(), autocast(dtype, device):
        loss, route = token_losses(model, windows, Policy(f"router:{name}", router=router), cmd.batch_size)
    route = route[:, :-1]  # (N, T-1, L): the routes of the predicting tokens, beside loss (N, T-1)
    ppl = math.exp(float(loss.double().mean()))
    res = {"kind": info["kind"], "name": name, "target": info["target"], "realized": realised(route), "ppl": ppl, "gap_recovered": None}
    res.update({"split": source, "seqs": len(windows), "pick": pick, "seq_len": T, "tokens": int(loss.numel()), "dtype": dtype})
    # the oracle row of the same budget; a budget of no whole number of layers (0.3 of 4) has none, and no gap
    k = Router(Path(cmd.run) / "routers" / name, {"options_flag": "big,small", "n_layer": cfg.model.n_layer, **info}, {}).budget_label()
    on_its_windows = oracle and window_key(res) == window_key(oracle) and dtype == oracle.get("dtype", "fp32")
    row = next((b for b in oracle["budgets"] if str(b["k"]) == k), None) if on_its_windows else None
    if row and "ppl_oracle_causal" in row:
        res["k"], res["ppl_fixed"], res["ppl_causal_oracle"] = row["k"], row["ppl_fixed"], row["ppl_oracle_causal"]
        gap = row["ppl_fixed"] - row["ppl_oracle_causal"]
        res["gap_recovered"] = (row["ppl_fixed"] - ppl) / gap if gap > 0 else None
    folder = Path(cmd.run) / "routers" / name
    tag = Path(source).stem  # prose-val, or a file name without its suffix
    write_json(folder / f"eval-{tag}.json", res)
    _write_tokens(folder / f"tokens-{tag}.jsonl.gz", windows, loss, route)
    return res


def _write_tokens(path: Path, windows, loss, route) -> None:
    """Per predicted token: seq, pos, token, loss, route (B/S/- string); written to a temporary name first."""
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        for n in range(len(windows)):
            ids = windows[n].tolist()
            for t in range(loss.shape[1]):
                f.write(
                    json.dumps(
                        {"seq": n, "pos": t, "token": ids[t + 1], "loss": round(float(loss[n, t]), 5), "route": format_route(route[n, t])}
                    )
                    + "\n"
                )


def main_train(cmd: RouterTrainCommand) -> None:
    meta = train_router(cmd, progress=not cmd.json)
    if cmd.json:
        print(json.dumps(meta))
        return
    r, t, c = meta["calibration"]["realized"], meta["train"], meta["config"]
    how = (
        f"loss {t['first_loss']:.4f} → {t['final_loss']:.4f} in {t['steps']} steps"
        if meta["kind"] == "paper"
        else f"fitted on {c['label_seqs']} oracle-labelled windows, held-out {'squared error' if c['head'] == 'layer' else 'loss'} "
        f"{t['first_loss']:.4f} ({'a constant' if c['head'] == 'layer' else 'fixed'}) → {t['final_loss']:.4f}"
    )
    if "shrink" in meta["calibration"]:  # --shrink: the factor, and the decision losses behind it
        cal = meta["calibration"]
        how += (
            f"; scores shrunk by {cal['shrink']} (held-out loss over every route {cal['shrink_losses']['0.0']:.4f} fixed, "
            f"{cal['shrink_losses'][str(cal['shrink'])]:.4f} shrunk)"
            if cal["shrink"]
            else f"; the fixed route (no shrink beat it clearly on held-out tokens: {cal['shrink_losses']['0.0']:.4f} fixed)"
        )
    if "tune" in meta["calibration"]:  # --tune: the paper's steps after the fit
        tune = meta["calibration"]["tune"]
        how += f"; then {tune['steps']} steps of the paper's objective, loss {tune['first_loss']:.4f} → {tune['final_loss']:.4f}"
    print(
        f"router {meta['name']}: {how} ({t['seconds']} s); calibrated realised big {r['big']:.3f} small {r['small']:.3f} skip {r['skip']:.3f}"
    )


def main_calibrate(cmd: RouterCalibrateCommand) -> None:
    meta = calibrate_router(cmd)
    if cmd.json:
        print(json.dumps(meta))
        return
    r, before = meta["calibration"]["realized"], meta["calibrated_from"]["calibration"] or {}
    was = before.get("realized", {})
    print(
        f"router {meta['name']}: {meta['calibrated_from']['name']} calibrated on {cmd.data} ({cmd.seqs} windows): realised big "
        f"{r['big']:.3f} small {r['small']:.3f} skip {r['skip']:.3f}"
        + (f" (on its first calibration text: big {was['big']:.3f} small {was['small']:.3f} skip {was['skip']:.3f})" if was else "")
    )


def main_eval(cmd: RouterEvalCommand) -> None:
    res = eval_router(cmd)
    if cmd.json:
        print(json.dumps(res))
        return
    r = res["realized"]
    gap = f", gap recovered {res['gap_recovered']:.3f}" if res["gap_recovered"] is not None else ""
    print(
        f"router {res['name']} on {res['split']} ({res['tokens']} tokens): ppl {res['ppl']:.2f}{gap}; realised big {r['big']:.3f} small {r['small']:.3f} skip {r['skip']:.3f}"
    )

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

import time
from pathlib import Path

import torch

from duollm.data.corpus import seeded_windows, token_array
from duollm.errors import DuoError
from duollm.routers.calibrate import calibrate
from duollm.routers.linear import LinearRouter
from duollm.routers.storage import router_name, save_router
from duollm.routing.budget import Budget, parse_mix, parse_options
from duollm.routing.route import Choice
from duollm.runs.checkpoint import save_weights
from duollm.runs.load import autocast, load_run
from duollm.train.router_fit import HEADS, Job, tune
from duollm.train.router_spec import RouterTrainSpec


def parse_target(budget: str, options: str) -> dict[int, float]:
    """`0.5` (+ options) → {Choice: fraction} for every option (routing.budget.parse_mix); DuoError when malformed."""
    try:
        parse_options(options)
    except ValueError as e:
        raise DuoError(str(e)) from None
    try:
        return parse_mix(budget, options)
    except ValueError as e:
        raise DuoError(f"bad --budget {budget!r}: {e}") from None


def whole_budget(target: dict[int, float], options: str, n_layer: int) -> Budget:
    """The oracle budget with round(fraction · L) counted layers per token."""
    if options == "big,small":
        return Budget.exactly_big(round(target[Choice.BIG] * n_layer))
    if options == "big,skip":
        return Budget.exactly_skip(round(target[Choice.SKIP] * n_layer))
    b, s = round(target[Choice.BIG] * n_layer), round(target[Choice.SKIP] * n_layer)
    return Budget.counts(big=b, small=n_layer - b - s, skip=s)


def train_router(cmd: RouterTrainSpec, progress: bool = True) -> dict:
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
    whole = whole_budget(target, cmd.options, L)  # the budget in whole counted layers per token
    try:
        whole.check(L)
    except ValueError as e:
        raise DuoError(str(e)) from None
    torch.manual_seed(cmd.seed)
    tokens = token_array(cfg.data.train, tok)
    calib = seeded_windows(tokens, cmd.calib_seqs, T, cmd.seed + 1)
    t0 = time.perf_counter()
    job = Job(cmd, model, tokens, target, calib, whole, L, T, cfg.model.d_model, device, amp, progress)
    router, losses, fit, real = HEADS[cmd.head if cmd.kind == "supervised" else "paper"](job)
    if isinstance(router, LinearRouter):  # the paper router and the layer-wise heads: (--tune, then) offsets on `calib`
        tune(model, router, tokens, target, cmd, T, progress, fit)
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
        save_weights(Path(cmd.run) / "routers" / name / "model.safetensors", model, config="{}")
    return meta

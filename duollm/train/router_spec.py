"""What `duollm router train|eval|calibrate` run: one spec dataclass per job, its fields the commands' flags (their
meaning: train/router.py's docstring). The library functions take these; duollm/cli/router.py adds `--json`."""

from __future__ import annotations

from dataclasses import dataclass

from duollm.flags import Count, NonNegative, Positive, PositiveFloat


@dataclass
class RouterTrainSpec:
    """The settings of `train_router` (train/router.py): which router, its budget, its training and calibration."""

    run: str  # run directory (from duollm train)
    kind: str = "paper"  # paper | supervised
    budget: str = "0.5"  # fraction of BIG (big,small) or SKIP (big,skip) choices; B,M,S for big,small,skip
    options: str = "big,small"  # big,small | big,skip | big,small,skip
    name: str = ""  # saved as RUN/routers/NAME; default KIND-BUDGET (plus the options when not big,small)
    steps: Positive = 300  # optimiser steps
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


@dataclass
class RouterEvalSpec:
    """The settings of `eval_router` (train/router_eval.py): which router, on which windows, at what precision."""

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


@dataclass
class RouterCalibrateSpec:
    """The settings of `calibrate_router` (train/router_eval.py): the router, the text to calibrate on, the new name."""

    run: str  # run directory (from duollm train)
    name: str  # the router to calibrate: RUN/routers/NAME (a paper or layer-head router)
    data: str  # text to calibrate on: a built-in source (prose, code, mix) or a path, as `duollm train --data`
    out: str = ""  # the new router's name; default NAME-cal-DATA (DATA: the source's file name, a .jsonl without it)
    seqs: Positive = 16  # windows of the text, drawn at random
    seq_len: Count = 0  # 0 = the router's training windows
    dtype: str = ""  # fp32 | bf16 (autocast on a GPU); default the router's
    seed: Count = 0  # draws the windows

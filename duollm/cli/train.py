"""`duollm train`: stage-1 training with random routing (train/loop.py), from a preset, flags and dotted overrides."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from duollm import distributed
from duollm.config import apply_overrides, to_dict
from duollm.flags import Count, Range
from duollm.presets import run_config
from duollm.train.loop import train


@dataclass
class TrainCommand:
    """Stage-1 training with random routing (resumable; torchrun runs it data-parallel)."""

    out: str  # run directory to create (or to continue with --resume)
    preset: str = "tiny"  # tiny, small, gpt2-124m, paper-1.4b
    data: str = ""  # training text: prose, code, mix, or a path (file, folder, .jsonl); sets data.train
    steps: Count = 0  # optimizer steps; 0 = the preset's train.steps
    ckpt_every: Annotated[int, Range(-1)] = -1  # steps between checkpoints; -1 = the preset's
    resume: bool = False  # continue the run in --out from its latest checkpoint
    json: bool = False  # print one JSON object instead of the summary
    overrides: dict = field(default_factory=dict)  # dotted config keys, e.g. {"model.n_layer": "8"}


def resolve(cmd: TrainCommand):
    """The RunConfig a train command asks for: preset, then the explicit flags, then dotted overrides."""
    flags = {"data.train": cmd.data or None, "train.steps": cmd.steps or None}
    flags["train.ckpt_every"] = None if cmd.ckpt_every < 0 else cmd.ckpt_every
    return apply_overrides(run_config(cmd.preset), {k: v for k, v in flags.items() if v is not None} | cmd.overrides)


def main(cmd: TrainCommand) -> None:
    cfg = resolve(cmd)
    if not cmd.json and distributed.is_main_process():
        print("config:", json.dumps(to_dict(cfg)))
    res = train(cfg, Path(cmd.out), cmd.resume, progress=not cmd.json)
    if not distributed.is_main_process():
        return
    if cmd.json:
        print(json.dumps(res))
    else:
        print(f"trained {res['steps']} steps: loss {res['final_loss']:.4f}, {res['tokens_per_s']:,.0f} tokens/s -> {cmd.out}")

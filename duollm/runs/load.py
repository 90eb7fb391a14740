"""A run directory read back: its config, its model with the latest weights, its tokenizer; and the precision
that oracles, routers and evaluations run at (fp32 exact, or bf16 autocast on a GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from duollm.config import RunConfig, from_dict
from duollm.data.tokenizer import load_tokenizer
from duollm.errors import DuoError
from duollm.model.transformer import DuoLM
from duollm.runs import checkpoint


def check_dtype(dtype: str) -> None:
    """DuoError unless `dtype` names a precision `autocast` knows: fp32 or bf16."""
    if dtype not in ("fp32", "bf16"):
        raise DuoError(f"--dtype must be fp32 or bf16, got {dtype!r}")


def autocast(dtype: str, device: str):
    """The precision of an oracle, router or evaluation run: fp32 (exact) or bf16 (autocast, on a GPU only; a CPU
    stays fp32). DuoError for any other name."""
    check_dtype(dtype)
    return torch.autocast("cuda", torch.bfloat16, enabled=dtype == "bf16" and str(device).startswith("cuda"))


def load_run(run: Path, device: str = "cpu"):
    """(RunConfig, model with the latest weights, tokenizer) of a run directory; DuoError when unusable."""
    run = Path(run)
    cfg_file = run / "config.json"
    if not cfg_file.exists():
        raise DuoError(f"{run} is not a run directory (no config.json)")
    try:
        cfg = from_dict(RunConfig, json.loads(cfg_file.read_text()))
    except json.JSONDecodeError as e:
        raise DuoError(f"{cfg_file} is not valid JSON ({e.msg})") from None
    ck = checkpoint.latest(run)
    if ck is None:
        raise DuoError(f"{run} has no checkpoint yet; train it first")
    model = DuoLM(cfg.model)
    checkpoint.load_weights(ck[1], model)
    return cfg, model.to(device), load_tokenizer(cfg.data.tokenizer)

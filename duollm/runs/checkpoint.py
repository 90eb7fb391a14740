"""Checkpoints as safetensors + JSON, written atomically, loaded with clear errors (no pickle anywhere).

Layout in a run directory:
    ckpt/step-000100/model.safetensors        weights; metadata: format, step, config (JSON)
    ckpt/step-000100/train_state.safetensors  AdamW moments and step per parameter, the data/route RNG state
    ckpt/latest.json                          {"step": 100, "dir": "step-000100"}: the only pointer

A checkpoint is written into a fresh step folder and becomes current only when `latest.json` is replaced
(an atomic rename), so an interrupted write leaves the previous checkpoint in force. Older step folders are
removed afterwards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from duollm.errors import DuoError
from duollm.files import atomic_path, write_json

FORMAT = "duollm-ckpt-1"


def save_weights(path: Path, model: nn.Module, **meta: str) -> None:
    """`model`'s state dict as safetensors at `path` (metadata: the format, then `meta`), written to a temporary
    name and renamed, so a reader never sees half a file."""
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(weights, tmp, metadata={"format": FORMAT, **meta})


def save_checkpoint(run: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, step: int, config: dict) -> Path:
    """Write the step folder, then point `latest.json` at it, then drop older step folders."""
    root = Path(run) / "ckpt"
    name = f"step-{step:06d}"
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_weights(folder / "model.safetensors", model, step=str(step), config=json.dumps(config))
    names = {p: n for n, p in model.named_parameters()}
    state = {"rng": gen.get_state()}
    for p, s in opt.state.items():
        for key, v in s.items():
            state[f"opt.{names[p]}.{key}"] = torch.as_tensor(v).detach().to("cpu").contiguous()
    save_file(state, folder / "train_state.safetensors", metadata={"format": FORMAT, "step": str(step)})
    write_json(root / "latest.json", {"step": step, "dir": name}, indent=2)
    for old in root.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def save_weights_only(run: Path, model: nn.Module, step: int, config: str) -> Path:
    """A checkpoint of weights only (no optimizer state: `train --resume` cannot continue it) at `step` in the run
    directory `run` being written, with `latest.json` pointing at it: what an imported model's run holds."""
    folder = Path(run) / "ckpt" / f"step-{step:06d}"
    folder.mkdir(parents=True)
    save_weights(folder / "model.safetensors", model, step=str(step), config=config)
    write_json(Path(run) / "ckpt" / "latest.json", {"step": step, "dir": folder.name}, indent=2)
    return folder


def latest(run: Path) -> tuple[int, Path] | None:
    """(step, folder) of the current checkpoint, or None when the run has none yet."""
    ptr = Path(run) / "ckpt" / "latest.json"
    if not ptr.exists():
        return None
    try:
        info = json.loads(ptr.read_text())
        step, folder = int(info["step"]), ptr.parent / str(info["dir"])
    except (ValueError, KeyError, TypeError):
        raise DuoError(f"{ptr} is corrupt; restore it or start a new run") from None
    return step, folder


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.exists():
        raise DuoError(f"checkpoint file missing: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DuoError(f"checkpoint {path} is corrupt or truncated ({str(e).splitlines()[0]})") from None
    if meta.get("format") != FORMAT:
        raise DuoError(f"{path} is not a duollm checkpoint (format {meta.get('format')!r})")
    return tensors, meta


def load_weights(folder: Path, model: nn.Module) -> dict:
    """Load `model.safetensors` into `model`, checking names and shapes; return the saved config dict."""
    path = Path(folder) / "model.safetensors"
    tensors, meta = _load(path)
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or extra:
        raise DuoError(f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in tensors.items():
        if v.shape != own[k].shape:
            raise DuoError(f"checkpoint {path} does not match the model: {k} is {tuple(v.shape)}, the model has {tuple(own[k].shape)}")
    model.load_state_dict(tensors)
    return json.loads(meta.get("config", "{}"))


def load_train_state(folder: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, step: int) -> None:
    """Restore AdamW moments and the RNG state saved beside the weights of the same step."""
    path = Path(folder) / "train_state.safetensors"
    tensors, meta = _load(path)
    if meta.get("step") != str(step):
        raise DuoError(f"{path} is from step {meta.get('step')}, the weights from step {step}")
    sd = opt.state_dict()
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in opt.param_groups for p in g["params"]]  # optimizer ids follow the groups
    index = {n: i for i, n in enumerate(order)}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key == "rng":
            continue
        name, _, field = key[len("opt.") :].rpartition(".")
        if name not in index:
            raise DuoError(f"{path} holds optimizer state for an unknown parameter {name}")
        state.setdefault(index[name], {})[field] = v
    sd["state"] = state
    opt.load_state_dict(sd)
    gen.set_state(tensors["rng"])

"""The conversions of `duollm export` (a run → a Hugging Face folder) and `duollm import` (a Hugging Face folder → a run).

    duollm export --run runs/t --hf hf/t [--policy BS-B]     # config.json, model.safetensors, tokenizer, routers/
    duollm import --hf hf/t --out runs/t2                    # config.json, ckpt/ (weights only), routers/

An exported folder holds what `save_pretrained` writes (config.json with model type `duollm`, the run's
config and the default policy; model.safetensors, one tensor per parameter, the tied embedding once;
generation_config.json), the tokenizer (tokenizer.json, tokenizer_config.json) and the run's routers
(`routers/NAME/`) except those trained with `--train-base`, which carry their own base weights. Import reads
the files directly (no transformers needed) and writes a run whose checkpoint holds the weights only: eval,
oracle, router and generate work on it; `train --resume` does not (no optimizer state).

Both write into a temporary folder beside the target and rename it into place at the end, so a failure
leaves nothing behind; an existing non-empty target is refused, never overwritten. This module imports
transformers only when an export runs, so `duollm --help` stays fast and import needs no transformers.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from duollm.config import RunConfig, from_dict, save_json, to_dict
from duollm.data.corpus import DataConfig
from duollm.errors import DuoError
from duollm.extras import require
from duollm.files import atomic_folder
from duollm.model.transformer import DuoConfig, DuoLM
from duollm.routers.storage import load_router
from duollm.runs import checkpoint
from duollm.runs.load import load_run


@dataclass
class ExportSpec:
    """The settings of `export`: the run, the folder to write, its default routing."""

    run: str  # run directory (from duollm train)
    hf: str  # the folder to write (must not exist, or be empty)
    policy: str = "all-big"  # the folder's default routing: all-big, all-small, random:P, a route string, router:NAME


@dataclass
class ImportSpec:
    """The settings of `import_folder`: the Hugging Face folder and the run directory to write."""

    hf: str  # the Hugging Face folder
    out: str  # the run directory to write (must not exist, or be empty)


def require_transformers():
    require("hf", "exporting to Hugging Face")
    import transformers  # the optional hf extra, checked just above

    return transformers


def exportable_routers(run: Path) -> tuple[list[Path], list[str]]:
    """(router folders to export, names skipped because they carry their own base weights)."""
    root = Path(run) / "routers"
    folders = sorted(p for p in root.glob("*") if (p / "router.json").exists()) if root.is_dir() else []
    return [p for p in folders if not (p / "model.safetensors").exists()], [p.name for p in folders if (p / "model.safetensors").exists()]


def export(cmd: ExportSpec) -> dict:
    """Write RUN as a Hugging Face folder; returns the summary."""
    require_transformers()
    from transformers.utils import logging as hf_logging  # transformers is optional (the hf extra): imported on use

    from duollm.hf.config import DuoLMConfig  # these three import transformers
    from duollm.hf.modeling import DuoForCausalLM
    from duollm.hf.tokenizer import hf_tokenizer

    run = Path(cmd.run)
    target = Path(cmd.hf)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):  # before any work
        raise DuoError(f"{target} already exists and is not an empty folder; choose another or remove it")
    cfg, duo, tok = load_run(run)
    step = checkpoint.latest(run)[0]
    routers, skipped = exportable_routers(run)
    config = DuoLMConfig.from_duo(
        cfg.model,
        policy=cmd.policy,
        duollm_run=to_dict(cfg),
        duollm_step=step,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.eos_id,
    )
    model = DuoForCausalLM(config)
    model.model.load_state_dict(duo.state_dict())
    for folder in routers:
        router, info = load_router(folder)
        model.routers[folder.name] = (router.eval(), info)
    model.routing()  # checks the policy (a route string's length, a router's presence) before anything is written
    hf_logging.disable_progress_bar()
    with atomic_folder(target, fresh=True) as tmp:
        model.save_pretrained(tmp)
        hf_tokenizer(cfg.data.tokenizer, cfg.model.max_seq_len).save_pretrained(tmp)
    n_params = sum(p.numel() for p in duo.parameters())
    return {
        "run": str(run),
        "hf": str(target),
        "step": step,
        "policy": cmd.policy,
        "params": n_params,
        "routers": sorted(model.routers),
        "skipped_routers": skipped,
    }


def read_folder(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json as a dict, weights by name without the `model.` prefix) of a Hugging Face folder."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise DuoError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise DuoError(f"{cfg_file} is not valid JSON ({e.msg})") from None
    if config.get("model_type") != "duollm":
        raise DuoError(
            f"{folder} holds a {config.get('model_type')!r} model, not a duollm one (nor a llama one, which duollm import turns into a Duo model)"
        )
    index = folder / "model.safetensors.index.json"  # large models are saved in shards
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    weights = {}
    for name in files:
        if not (folder / name).is_file():
            raise DuoError(f"weights file missing: {folder / name}")
        try:
            weights.update(load_file(str(folder / name)))
        except (SafetensorError, OSError) as e:
            raise DuoError(f"{folder / name} is corrupt or truncated ({str(e).splitlines()[0]})") from None
    return config, {k.removeprefix("model."): v for k, v in weights.items()}


def model_type(folder: Path) -> str | None:
    """The `model_type` of a folder's config.json (`duollm` for what `duollm export` writes), or None."""
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def import_folder(cmd: ImportSpec) -> dict:
    """Write a run directory from a Hugging Face folder; returns the summary."""
    folder, out = Path(cmd.hf), Path(cmd.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DuoError(f"{out} already exists and is not an empty folder; choose another or remove it")
    config, weights = read_folder(folder)
    try:
        duo = DuoConfig(**{k: config[k] for k in DuoConfig.__dataclass_fields__ if k in config})
        if config.get("duollm_run"):  # exported by duollm: the run's own config
            run_cfg = from_dict(RunConfig, config["duollm_run"])
        else:  # saved from Python: the tokenizer is the folder's
            run_cfg = RunConfig(preset="hf", data=DataConfig(tokenizer="tokenizer.json"))
    except (TypeError, ValueError) as e:
        raise DuoError(f"{folder}/config.json does not describe a Duo model ({e})") from None
    run_cfg.model = duo
    model = DuoLM(duo)
    own = model.state_dict()
    if set(own) != set(weights) or any(weights[k].shape != own[k].shape for k in own):
        raise DuoError(f"the weights in {folder} do not match its config.json (names or shapes differ)")
    model.load_state_dict(weights)
    spec = run_cfg.data.tokenizer
    keep_tokenizer = spec not in ("builtin", "bytes")  # any other tokenizer travels as a file in the run
    if keep_tokenizer and not (folder / "tokenizer.json").is_file():
        raise DuoError(f"{folder} has no tokenizer.json")
    step = int(config.get("duollm_step", 0))
    with atomic_folder(out, fresh=True) as tmp:
        if keep_tokenizer:
            shutil.copy(folder / "tokenizer.json", tmp / "tokenizer.json")
            run_cfg.data = dataclasses.replace(run_cfg.data, tokenizer=str((out / "tokenizer.json").resolve()))
        (tmp / "config.json").write_text(save_json(run_cfg))
        checkpoint.save_weights_only(tmp, model, step, save_json(run_cfg))
        if (folder / "routers").is_dir():
            shutil.copytree(folder / "routers", tmp / "routers")
    routers = sorted(p.name for p in (out / "routers").glob("*")) if (out / "routers").is_dir() else []
    return {"hf": str(folder), "run": str(out), "params": sum(p.numel() for p in model.parameters()), "routers": routers}

"""Routers on disk: `RUN/routers/NAME/router.safetensors` (the weights) and `router.json` (its class, options,
sizes and what trained it), written to temporary names and renamed; read back with clear errors, and by name
from a run. A router trained with `--train-base` keeps the base weights it was trained with beside it
(`model.safetensors`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from duollm.errors import DuoError
from duollm.files import atomic_path, write_json
from duollm.routers.linear import NAMES, LinearRouter
from duollm.routers.route_head import RouteRouter
from duollm.routing.route import Choice
from duollm.runs.checkpoint import load_weights


def router_name(kind: str, budget: str, options: str) -> str:
    return f"{kind}-{budget}" + ("" if options == "big,small" else f"-{options.replace(',', '-')}")


def save_router(router: nn.Module, folder: Path, meta: dict) -> None:
    """`folder/router.safetensors` + `folder/router.json`, written to temporary names, then renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"class": "linear" if isinstance(router, LinearRouter) else "route", **meta}
    info.update(options=[Choice(c).name.lower() for c in router.options], n_layer=cfg_layers(router), d_model=cfg_width(router))
    state = {k: v.detach().cpu().contiguous() for k, v in router.state_dict().items()}
    with atomic_path(folder / "router.safetensors") as tmp:
        save_file(state, tmp)
    write_json(folder / "router.json", info)


def cfg_layers(router: nn.Module) -> int:
    return len(router.layers) if isinstance(router, LinearRouter) else router.routes.shape[1]


def cfg_width(router: nn.Module) -> int:
    return router.layers[0].in_features if isinstance(router, LinearRouter) else router.weight.shape[0]


def load_router(folder: Path) -> tuple[nn.Module, dict]:
    """(router, its JSON) from a folder written by `save_router`; DuoError when missing or corrupt."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "router.json").read_text())
        state = load_file(folder / "router.safetensors")
        if info.get("class") == "route":
            router = RouteRouter(state["routes"], int(info["d_model"]))
            state.setdefault("price", torch.zeros(()))  # saved before route heads had a price
        else:
            router = LinearRouter(int(info["n_layer"]), int(info["d_model"]), tuple(NAMES[o] for o in info["options"]))
        router.load_state_dict(state)
    except FileNotFoundError:
        raise DuoError(f"no router in {folder}; train one with `duollm router train`") from None
    except (ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise DuoError(f"router in {folder} is unreadable or does not match its router.json ({str(e).splitlines()[0]})") from None
    return router, info


def load_named(run: Path, name: str, device: str, model=None):
    """(router on device, its JSON) from RUN/routers/NAME, with a clear error listing what exists.

    A router trained with `--train-base` keeps the base weights it was trained with beside it (model.safetensors); they are
    loaded into `model` when one is given."""
    folder = Path(run) / "routers" / name
    if not folder.exists():
        have = sorted(p.name for p in (Path(run) / "routers").glob("*") if p.is_dir()) if (Path(run) / "routers").exists() else []
        raise DuoError(f"no router {name!r} in {run}/routers (have: {', '.join(have) or 'none'}); train one with `duollm router train`")
    router, info = load_router(folder)
    if model is not None and (folder / "model.safetensors").exists():
        load_weights(folder, model)
    return router.to(device).eval(), info

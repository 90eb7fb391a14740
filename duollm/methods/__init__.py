"""The arena's entrants, each in its own module behind the interface of base.py (docs/arena.md).

from duollm.methods import build, greedy, save_entrant, load_entrant
model = build("dense", cfg)                  # an entrant on the backbone cfg (a DuoConfig)
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from duollm.errors import DuoError
from duollm.methods.acm import ACM
from duollm.methods.base import ENTRANT_FILE, SOURCE_FILE, WEIGHTS_FILE, Entrant, MethodOutput, greedy, save_entrant
from duollm.methods.dense import DenseLM
from duollm.methods.duo import DuoRandom
from duollm.methods.halting import Halting
from duollm.methods.joint import JointDuo
from duollm.methods.layerskip import LayerSkip
from duollm.methods.mod import MoD
from duollm.methods.mor import MoR
from duollm.model.transformer import DuoConfig

# every entrant by its name: one line per method module
METHODS: dict[str, type[Entrant]] = {
    "dense": DenseLM,
    "duo-random": DuoRandom,
    "acm": ACM,
    "duo-joint": JointDuo,
    "mod": MoD,
    "layerskip": LayerSkip,
    "halting": Halting,
    "mor": MoR,
}


def build(method: str, cfg: DuoConfig, **options) -> Entrant:
    """The entrant `method` on the backbone `cfg`; an unknown method or option is a DuoError naming it."""
    if method not in METHODS:
        raise DuoError(f"unknown arena method {method!r}; known: {', '.join(sorted(METHODS))}")
    try:
        return METHODS[method](cfg, **options)
    except TypeError as e:
        raise DuoError(f"method {method!r}: {e}") from None


def load_entrant(folder: str | Path, device: str | torch.device = "cpu") -> Entrant:
    """The entrant `save_entrant` wrote into `folder`."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / ENTRANT_FILE).read_text())
    except (OSError, ValueError) as e:
        raise DuoError(f"{folder} holds no readable {ENTRANT_FILE}: {e}") from None
    model = build(meta["method"], DuoConfig(**meta["config"]), **meta["options"])
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.to(device)


__all__ = ["ENTRANT_FILE", "SOURCE_FILE", "METHODS", "Entrant", "MethodOutput", "build", "greedy", "load_entrant", "save_entrant"]

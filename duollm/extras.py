"""The optional extras of pyproject.toml and the modules each brings, so that a command that needs one says so
before it starts any work, naming the extra to install.

    require("analysis", "duollm report")   # DuoError: duollm report needs matplotlib: pip install 'duollm[analysis]'

Only `importlib.util.find_spec` is called: nothing heavy is imported to check.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from duollm.errors import DuoError

# extra → the top-level modules it installs (the packages of pyproject.toml's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "analysis": ("matplotlib",),
    "hf": ("transformers",),
    "pretrained": ("transformers", "gguf", "accelerate"),
    "harness": ("transformers", "lm_eval"),
    "kernels": ("triton",),
}


# module → the oldest major release that works, where pyproject.toml asks for one
MIN_MAJOR: dict[str, int] = {"transformers": 5}


def _major(module: str) -> int:
    try:
        return int(importlib.metadata.version(module).split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


def missing(extra: str) -> list[str]:
    """The modules of `extra` that this Python cannot import, or has in a release too old (as `name>=N`)."""
    out = []
    for m in EXTRAS[extra]:
        if importlib.util.find_spec(m) is None:
            out.append(m)
        elif m in MIN_MAJOR and _major(m) < MIN_MAJOR[m]:
            out.append(f"{m}>={MIN_MAJOR[m]}")
    return out


def require(extra: str, what: str) -> None:
    """Raise a one-line DuoError when a module of `extra` is missing: `what` needs it, and how to install it."""
    if gone := missing(extra):
        raise DuoError(f"{what} needs {' and '.join(gone)}: pip install 'duollm[{extra}]'")

"""The optional extras of pyproject.toml and the modules each brings, so that a command that needs one says so
before it starts any work, naming the extra to install.

    require("analysis", "duollm report")   # DuoError: duollm report needs matplotlib: pip install 'duollm[analysis]'

Only `importlib.util.find_spec` is called: nothing heavy is imported to check.
"""

from __future__ import annotations

import importlib.util

from duollm.errors import DuoError

# extra → the top-level modules it installs (the packages of pyproject.toml's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "analysis": ("matplotlib",),
    "hf": ("transformers",),
    "harness": ("transformers", "lm_eval"),
    "kernels": ("triton",),
}


def missing(extra: str) -> list[str]:
    """The modules of `extra` that this Python cannot import."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Raise a one-line DuoError when a module of `extra` is missing: `what` needs it, and how to install it."""
    if gone := missing(extra):
        raise DuoError(f"{what} needs {' and '.join(gone)}: pip install 'duollm[{extra}]'")

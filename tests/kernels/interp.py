"""When Triton's CPU interpreter can run the kernels' parity checks here: Triton installed, and not a release before
3.7 under NumPy 2.3 or newer (its interpreter turns one-element arrays into scalars, which NumPy 2.3 refuses)."""

import importlib.util

import pytest


def _reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    import numpy
    import triton

    def version(v: str) -> tuple[int, int]:
        return tuple(int(p) for p in v.split(".")[:2])

    if version(triton.__version__) < (3, 7) and version(numpy.__version__) >= (2, 3):
        return f"Triton {triton.__version__}'s interpreter does not run under NumPy {numpy.__version__} (3.7 or newer does)"
    return None


REASON = _reason()
interpreter = pytest.mark.skipif(REASON is not None, reason=REASON or "")

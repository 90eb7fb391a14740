"""When Triton's CPU interpreter can run the kernels' parity checks here: Triton installed, and not a release before
3.7 under NumPy 2.3 or newer (its interpreter turns one-element arrays into scalars, which NumPy 2.3 refuses)."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch


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
gpu_triton = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("triton") is None, reason="needs a GPU and Triton"
)


def check_interpreted(module: str) -> None:
    """Run `module`'s `check('cpu', torch.float32, 1e-5)` in a process of its own under Triton's interpreter (the
    variable is read when the kernels are defined) and fail with its error output."""
    code = f"from {module} import check; import torch; check('cpu', torch.float32, 1e-5)"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]

"""Whether a Triton path can run, decided without importing Triton (the core import stays light, and Triton loads
only when one of its kernels runs: kernels/__init__.py)."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

TRITON = importlib.util.find_spec("triton") is not None  # found, not imported
_RECORDING = threading.local()  # .on: a CUDA graph of this thread is being recorded, its warm-up included
DECODE_ROWS = 64  # a decode step's rows, for kernels/triton_decode.py: past them the weights no longer bound a step


def triton_usable(u: Tensor, max_rows: int | None = None) -> bool:
    """A Triton path can run on `u` (B, T, C): Triton present, a CUDA tensor in bf16 or fp16 (fp32 would run the
    matmuls in tf32), no gradient wanted (forward only), and at most `max_rows` rows if given."""
    return (
        TRITON
        and u.is_cuda
        and u.dtype in (torch.bfloat16, torch.float16)
        and not torch.is_grad_enabled()
        and (max_rows is None or u.shape[0] * u.shape[1] <= max_rows)
    )


@contextmanager
def recording() -> Iterator[None]:
    """Around a CUDA graph's warm-up and its capture (model/decode.py): both then choose the same sync-free path,
    so a kernel compiles and tunes in the warm-up, never inside the capture (`kernels.choose`)."""
    before = getattr(_RECORDING, "on", False)
    _RECORDING.on = True
    try:
        yield
    finally:
        _RECORDING.on = before


def is_recording() -> bool:
    return getattr(_RECORDING, "on", False)


def compiling() -> bool:
    """A step being traced by torch.compile: nothing may be read back on the host (the model asks here)."""
    return torch.compiler.is_compiling()

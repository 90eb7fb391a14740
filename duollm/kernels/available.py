"""Whether a Triton path can run, decided without importing Triton (the core import stays light, and Triton loads
only when one of its kernels runs: kernels/__init__.py)."""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

TRITON = importlib.util.find_spec("triton") is not None  # found, not imported
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

"""Fused projections for decoding: each attention's q, k and v, and each FFN module's gate and up, as one matrix.

A decode step at small batch reads every weight once per token, and each matrix-vector product is a kernel of its
own; one matmul over the rows of q, k and v together (and of gate and up) reads the same bytes in fewer, larger
kernels (docs/speed.md, "Decoding"). `fuse(model)` concatenates the weights once and makes the parameters views of
the new matrix, so nothing is stored twice and the state dict is unchanged; `fused(model)` switches the fused
matmuls on for the duration of a `with` (model/decode.py `Decoder` decodes inside one). Outside it, and for any
module with a gradient wanted, the model runs its separate projections as before.

The views break if the model is later moved or cast (`.to()` gives each parameter new storage); `fuse` notices
that (a parameter that is no longer where its view was) and fuses again, and says so, so that a caller that
recorded CUDA graphs over the old matrices can record them again (only that caller learns it: two decoders of one
model that is moved between their calls must both be rebuilt). Until `fuse` runs again, the old matrices stay in
memory. A SMALL that is a view of BIG's first neurons
(`SmallView`) runs its own slices; a separate SMALL is fused like BIG.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from duollm.model.ffn import SwiGLU
from duollm.model.transformer import Attention


def _parts(module: nn.Module) -> list[nn.Parameter]:
    if isinstance(module, Attention):
        return [module.q.weight, module.k.weight, module.v.weight]
    return [module.gate.weight, module.up.weight]


def _intact(module: nn.Module, store: torch.Tensor | None) -> bool:
    """The parameters are still the consecutive rows of `store`."""
    if store is None:
        return False
    row, off = store.stride(0) * store.element_size(), 0
    for p in _parts(module):
        if p.dtype != store.dtype or p.device != store.device or p.data_ptr() != store.data_ptr() + off * row:
            return False
        off += p.shape[0]
    return off == store.shape[0]


def fuse(model: nn.Module) -> bool:
    """Concatenate each attention's q/k/v and each SwiGLU's gate/up weights into one matrix, the parameters becoming
    its row blocks; where that is already so, nothing changes. True when any matrix was (re)built."""
    built = False
    for module in model.modules():
        if not isinstance(module, Attention | SwiGLU):
            continue
        if _intact(module, getattr(module, "_fused_store", None)):
            continue
        with torch.no_grad():
            store = torch.cat([p.data for p in _parts(module)])  # (rows, C)
            off = 0
            for p in _parts(module):
                n = p.shape[0]
                p.data = store[off : off + n]  # the same values, now a view: stored once
                off += n
        module._fused_store, built = store, True
    return built


@contextmanager
def fused(model: nn.Module, one_row: bool = False) -> Iterator[bool]:
    """Within the `with`, attention and FFN modules run their fused matmuls (`fuse` first; yields its result); with
    `one_row`, a step of one row also runs every matrix product (q/k/v, o, gate/up, down, the head) through the
    one-row matrix-vector kernels (kernels.linear, kernels.glu; a Triton path on a GPU, else as before)."""
    built = fuse(model)
    modules = [m for m in model.modules() if isinstance(m, Attention | SwiGLU)]
    rows = [m for m in model.modules() if hasattr(m, "one_row")]
    for m in modules:
        m.fused = m._fused_store
    for m in rows:
        m.one_row = one_row
    try:
        yield built
    finally:
        for m in modules:
            m.fused = None
        for m in rows:
            m.one_row = False

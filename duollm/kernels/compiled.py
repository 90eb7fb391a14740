"""Elementwise chains of the model run as one fused kernel on a GPU, through torch.compile (Inductor).

The model's code stays eager and readable (model/); a function wrapped here keeps that code as its reference
and its CPU path. On CUDA tensors, outside an enclosing compilation (which fuses it anyway), it runs the
same function compiled once with dynamic shapes, so that a chain of small ops reads and writes its tensors
once instead of once per op. Used for the rotary embedding: eager, it is some nine passes over q and k, a
fifth of a prefill's GPU time at the paper's width and a third of the kernels of a decode step
(docs/benchmarks.md).
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=True, fullgraph=True)


def on_gpu(fn):
    """`fn`, fused on CUDA tensors (its first argument decides); eager on a CPU and inside a compilation."""

    @functools.wraps(fn)
    def run(x, *args):
        if x.is_cuda and not torch.compiler.is_compiling():
            return _compiled(fn)(x, *args)
        return fn(x, *args)

    return run

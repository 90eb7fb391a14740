"""Elementwise chains of the model run as one fused kernel on a GPU, through torch.compile (Inductor).

The model's code stays eager and readable (model/); a function wrapped here keeps that code as its reference
and its CPU path. On CUDA tensors, outside an enclosing compilation (which fuses it anyway), it runs the
same function compiled once with dynamic shapes, so that a chain of small ops reads and writes its tensors
once instead of once per op. Used for the rotary embedding: eager, it is some nine passes over q and k, a
fifth of a prefill's GPU time at the paper's width and a third of the kernels of a decode step
(docs/benchmarks.md).

Dynamic shapes cover lengths and batch sizes; each new rank or dtype of the arguments compiles once more. A process
that meets many (the arena: a dozen entrants, training under autocast, decoding, top-k on gathered tokens) can pass
Dynamo's limit on recompilations of one function: past it, the function runs eager from then on, with the same
result.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=True, fullgraph=True)


def on_gpu(fn):
    """`fn`, fused on CUDA tensors (its first argument decides); eager on a CPU, inside a compilation, and once Dynamo
    has refused to compile it again (its recompilation limit)."""
    eager = False

    @functools.wraps(fn)
    def run(x, *args):
        nonlocal eager
        if x.is_cuda and not eager and not torch.compiler.is_compiling():
            try:
                return _compiled(fn)(x, *args)
            except Exception as e:  # only the recompilation limit: anything else is raised again
                if "RecompileLimit" not in type(e).__name__ and "recompile limit" not in str(e):
                    raise
                eager = True
        return fn(x, *args)

    return run


def static_step(fn, tune: bool = False):
    """`fn` compiled whole (fullgraph: a graph break is an error, not a silent slow path) at static shapes, each new
    shape compiling once more: a decode step, recorded afterwards as a CUDA graph (model/decode.py `Decoder`).

    `tune`: Inductor's coordinate-descent tuning, under which it also writes each matrix-vector product of one row
    (batch 1) as a reduction kernel of its own, tuned for the memory's bandwidth, in place of cuBLAS (the setting of
    PyTorch's gpt-fast); it makes the first compilation of each shape slower."""
    config = torch._dynamo.config  # every Decoder compiles the same method once per (bucket, tokens, route): room for them
    config.recompile_limit = max(config.recompile_limit, 256)
    options = {"coordinate_descent_tuning": True} if tune else None
    return torch.compile(fn, fullgraph=True, dynamic=False, options=options)

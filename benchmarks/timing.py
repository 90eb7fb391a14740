"""The one way the benchmarks time work: wall clock around a call, the GPU drained before and after."""

import time

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    """(seconds, result) of one call of fn()."""
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out

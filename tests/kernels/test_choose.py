"""`kernels.choose`: which routed-FFN path a call gets. The rules are pure logic over a few device facts, so the facts
are stubbed here (a CUDA tensor's `is_cuda`, Triton's availability, a graph being recorded) and every branch runs on
a CPU; the paths themselves are tested against the reference in the other files of this folder."""

from types import SimpleNamespace

import pytest
import torch

from duollm import kernels


@pytest.fixture
def gpu(monkeypatch):
    """A recorded CUDA graph's step with Triton usable: returns a fake input of `rows` rows."""
    monkeypatch.setattr(kernels, "is_recording", lambda: True)
    monkeypatch.setattr(kernels, "triton_usable", lambda u, rows=None: rows is None or u.shape[0] * u.shape[1] <= rows)
    monkeypatch.setattr(kernels.grouped, "usable", lambda u: True)
    return lambda rows: SimpleNamespace(is_cuda=True, shape=(rows, 1, 64))


def test_cpu_calls_take_the_reference():
    u = SimpleNamespace(is_cuda=False, shape=(4, 16, 64))
    assert kernels.choose("auto", u) == "reference"
    assert kernels.choose("decode", u) == "reference"


def test_a_recorded_step_reads_only_the_chosen_modules_up_to_the_kernel_s_rows(gpu):
    assert kernels.choose("auto", gpu(1)) == "decode"
    assert kernels.choose("auto", gpu(kernels.DECODE_ROWS)) == "decode"
    assert kernels.choose("auto", gpu(kernels.DECODE_ROWS + 1)) == "masked"  # too many rows for the kernel
    assert kernels.choose("auto", gpu(kernels.MASKED_ROWS + 1)) == "grouped"  # a prefill being recorded
    assert kernels.choose("sorted", gpu(1)) == "decode"  # sorted reads the host: never inside a graph


def test_with_small_as_a_view_of_big_more_than_a_few_rows_run_masked(gpu):
    assert kernels.choose("auto", gpu(1), view=True) == "decode"  # one token's route: only its modules are read
    assert kernels.choose("auto", gpu(kernels.VIEW_ROWS), view=True) == "decode"
    assert kernels.choose("auto", gpu(kernels.VIEW_ROWS + 1), view=True) == "masked"  # all-BIG's cost exactly
    assert kernels.choose("decode", gpu(kernels.VIEW_ROWS + 1), view=True) == "decode"  # asked for by name


def test_a_compiled_step_takes_sorted_only_with_the_counts_handed_over(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(kernels.grouped, "usable", lambda u: True)
    u = SimpleNamespace(is_cuda=True, shape=(8, 1024, 64))
    with torch.enable_grad():  # training
        assert kernels.choose("auto", u) == "grouped"  # counts unknown: sync-free, at the worst case's shapes
        assert kernels.choose("auto", u, counted=True) == "sorted"  # fixed shapes, no host read


def test_a_compiled_gpu_step_never_takes_a_path_that_reads_the_host(monkeypatch):
    """While Dynamo traces, a graph being recorded cannot be seen, so a named path that reads the host is replaced."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(kernels.grouped, "usable", lambda u: True)
    u = SimpleNamespace(is_cuda=True, shape=(8, 1024, 64))
    with torch.enable_grad():
        assert kernels.choose("sorted", u) == "grouped"
        assert kernels.choose("reference", u) == "grouped"
        assert kernels.choose("sorted", u, counted=True) == "sorted"

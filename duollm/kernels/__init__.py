"""Fast paths behind the model's readable reference (docs/design.md §5, §7.10): each equals `model/ffn.py` `RoutedFFN`
(or the model function it wraps), is parity-tested in tests/kernels, and is measured in benchmarks/.

`choose` decides which routed-FFN path runs per-token choices; the model asks it, so that what depends on
the device, on CUDA-graph capture and on compilation stays out of the model's code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.kernels import grouped
from duollm.kernels.available import DECODE_ROWS, compiling, is_recording, recording, triton_usable  # noqa: F401  (recording: for callers)
from duollm.kernels.grouped import routed_ffn_grouped
from duollm.kernels.masked import routed_ffn_masked
from duollm.kernels.sorted import routed_ffn_sorted


def routed_ffn_fused(u: Tensor, choice: Tensor, small, big) -> Tensor:
    """kernels/triton_ffn.py, imported at its first use."""
    from duollm.kernels.triton_ffn import routed_ffn_fused as run  # loads Triton: only when this path runs

    return run(u, choice, small, big)


def _decode_op(
    x: Tensor, choice: Tensor, bg: Tensor, bu: Tensor, bd: Tensor, sg: Tensor | None, su: Tensor | None, sd: Tensor | None, d_small: int
) -> Tensor:
    from duollm.kernels.triton_decode import routed_ffn_decode as run  # loads Triton: only when this path runs

    return run(x, choice, (bg, bu, bd), None if sg is None else (sg, su, sd), d_small)


# an opaque op to torch.compile, which would otherwise trace into Triton's launcher (model/decode.py compiles steps)
_DECODE_OP = torch.library.custom_op(
    "duollm::routed_ffn_decode",
    _decode_op,
    mutates_args=(),
    schema="(Tensor x, Tensor choice, Tensor bg, Tensor bu, Tensor bd, Tensor? sg, Tensor? su, Tensor? sd, int d_small) -> Tensor",
)
_DECODE_OP.register_fake(lambda x, *rest: torch.empty_like(x))


def routed_ffn_decode(u: Tensor, choice: Tensor, small, big) -> Tensor:
    """kernels/triton_decode.py: the same result as `RoutedFFN(u, choice)` for per-token choices (B, T) uint8 of
    at most DECODE_ROWS rows, reading only the modules some row chose. Forward only."""
    B, T, C = u.shape
    x = u.reshape(B * T, C).contiguous()
    picks = choice.reshape(-1).contiguous()  # a route's column is strided; the kernel reads choices one after another
    w = lambda lin: lin.weight.to(x.dtype)  # noqa: E731  (a copy only under autocast)
    if getattr(small.gate, "owner", None) is big:  # a SmallView: SMALL is BIG's first neurons, read within BIG's
        out = _DECODE_OP(x, picks, w(big.gate), w(big.up), w(big.down), None, None, None, small.gate.n)
    else:
        d_small = small.gate.weight.shape[0]
        out = _DECODE_OP(x, picks, w(big.gate), w(big.up), w(big.down), w(small.gate), w(small.up), w(small.down), d_small)
    return out.view(B, T, C)


def _gemv_op(x: Tensor, w: Tensor) -> Tensor:
    from duollm.kernels.triton_decode import gemv  # loads Triton: only when this path runs

    return gemv(x, w)


def _glu_op(x: Tensor, wg: Tensor, wu: Tensor) -> Tensor:
    from duollm.kernels.triton_decode import glu  # loads Triton: only when this path runs

    return glu(x, wg, wu)


_GEMV_OP = torch.library.custom_op("duollm::gemv", _gemv_op, mutates_args=(), schema="(Tensor x, Tensor w) -> Tensor")
_GEMV_OP.register_fake(lambda x, w: x.new_empty(x.shape[0], w.shape[0]))
_GLU_OP = torch.library.custom_op("duollm::glu", _glu_op, mutates_args=(), schema="(Tensor x, Tensor wg, Tensor wu) -> Tensor")
_GLU_OP.register_fake(lambda x, wg, wu: x.new_empty(x.shape[0], wg.shape[0]))


ONE_ROW_MIN = 0  # weights of fewer elements than this stay with F.linear even with one_row (read when a step is traced)


def _serves_one_row(x: Tensor, *weights: Tensor) -> bool:
    """The one-row kernels serve `x`: a single row (a batch-1 decode step) where a Triton path can run, weights
    in x's dtype, contiguous along the input, and together at least ONE_ROW_MIN elements (0: on the H200, keeping
    SMALL's matrices on F.linear measured slower, docs/benchmarks.md; `bench_decode --one-row-min` measures it)."""
    return (
        x.numel() == x.shape[-1]
        and triton_usable(x.reshape(1, 1, -1))
        and all(w.dtype == x.dtype and w.stride(1) == 1 for w in weights)
        and sum(w.numel() for w in weights) >= ONE_ROW_MIN
    )


def linear(x: Tensor, w: Tensor, one_row: bool = False) -> Tensor:
    """F.linear(x, w) (no bias); with `one_row`, a single row on a GPU through the one-row matrix-vector kernel
    (kernels/triton_decode.py `gemv`), which reads the weights at the memory's pace where cuBLAS's and Inductor's
    kernels for one row do not (docs/benchmarks.md). Opt-in: model/fuse.py `fused(model, one_row=True)`."""
    if one_row and _serves_one_row(x, w):
        return _GEMV_OP(x.reshape(1, -1), w).view(*x.shape[:-1], w.shape[0])
    return torch.nn.functional.linear(x, w)


def glu(x: Tensor, wg: Tensor, wu: Tensor, one_row: bool = False) -> Tensor:
    """silu(x·W_gateᵀ)·(x·W_upᵀ), the SwiGLU's inner activations; with `one_row`, as `linear`, one kernel for both."""
    if one_row and _serves_one_row(x, wg, wu) and wu.stride() == wg.stride():
        return _GLU_OP(x.reshape(1, -1), wg, wu).view(*x.shape[:-1], wg.shape[0])
    lin = torch.nn.functional.linear
    return torch.nn.functional.silu(lin(x, wg)) * lin(x, wu)


PATHS = {
    "grouped": routed_ffn_grouped,
    "sorted": routed_ffn_sorted,
    "masked": routed_ffn_masked,
    "fused": routed_ffn_fused,
    "decode": routed_ffn_decode,
}
MASKED_ROWS = 1024  # inside a CUDA graph, per-token choices of at most this many rows run masked
VIEW_ROWS = 4  # with SMALL a view of BIG, more rows than this run masked: one pass over BIG, as all-BIG (masked.py)


def choose(kernel: str, u: Tensor, view: bool = False, counted: bool = False) -> str:
    """The path for per-token choices over `u` (B, T, C): `kernel` ("reference", "sorted", "grouped",
    "masked", "fused": Triton, forward only, opt-in since it measured slower than sorted, or "decode": Triton,
    a decode step's few rows, reading only the modules some row chose), or for "auto" the reference on a CPU,
    and on a GPU the sorted path (one host read per layer). A CUDA graph being recorded, or a step being
    compiled, which cannot wait for the host, gets a sync-free path: grouped, and for a decode step's few rows
    (recorded, or compiled without gradients) the decode kernel where Triton serves (`triton_usable`), else
    masked, up to MASKED_ROWS rows; with SMALL a view of BIG (`view`), masked already above VIEW_ROWS rows, where
    mixed routes choose nearly every module and masked costs all-BIG exactly. A compiled step whose caller handed
    over the counts (`counted`: a route drawn on the host with exact counts, train/loop.py) gets the sorted path,
    whose shapes they fix. A graph's warm-up (`recording`) chooses as its capture does."""
    traced = compiling()  # a compiled step cannot wait for the host either
    # a graph's warm-up too; while Dynamo traces, neither the stream query nor the thread-local flag is seen, so a
    # traced step is treated below as one that may be recorded: no path that reads the host unless counts are given
    capturing = u.is_cuda and not traced and (is_recording() or torch.cuda.is_current_stream_capturing())
    inference = capturing or (traced and not torch.is_grad_enabled())  # a compiled decode step, not training
    if kernel == "auto":
        kernel = "grouped" if capturing or (traced and not counted) else "sorted" if u.is_cuda or traced else "reference"
    if (capturing or (traced and u.is_cuda and not counted)) and kernel not in ("grouped", "masked", "decode"):
        kernel = "grouped"  # sync-free
    if inference and kernel == "grouped" and u.shape[0] * u.shape[1] <= MASKED_ROWS:  # a decode step's few rows
        few = not (view and u.shape[0] * u.shape[1] > VIEW_ROWS)  # with a view, more rows run masked: all-BIG's cost
        kernel = "decode" if few and triton_usable(u, DECODE_ROWS) else "masked"  # the chosen modules' weights only
    if kernel == "decode" and not triton_usable(u, DECODE_ROWS):
        kernel = "masked" if capturing or traced else "sorted" if u.is_cuda else "reference"
    if kernel == "fused" and not triton_usable(u):  # Triton, bf16/fp16 on a GPU, no autograd: else the next best
        kernel = "masked" if capturing else "sorted" if u.is_cuda else "reference"
    return kernel if kernel != "grouped" or grouped.usable(u) else "reference"

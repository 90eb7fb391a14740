"""The routed FFN of a decode step: per-token choices read on the device, and a module's weights read only when
some row of the step chose it (forward only; Triton).

Readable reference: `model/ffn.py` `RoutedFFN`. Inside a CUDA graph the other sync-free path, kernels/masked.py,
runs both modules on every row, so a step reads BIG's and SMALL's weights whatever the routes, and per-token
routing decodes slower than all-BIG (docs/benchmarks.md). Here, as in vLLM's fused MoE kernel, where an expert
that no token chose is never read, each program first loads the step's choices and stops at once when no row
needs its slice of the weights. A decode step has a few rows (`MAX_ROWS`), so the matmuls are matrix-vector
products bound by the weight bytes, and the bytes a step reads are those of the modules its rows chose.

A module is read through its rows' *widths*: a row that chose it needs its first `width` inner neurons, a row
that did not needs none. Two kernels per module, then one for the step:

1. `_up`: a program owns BN inner neurons; it computes max(width) over the rows and returns if its neurons lie
   past it (no weight read). Else it accumulates x·W_gateᵀ and x·W_upᵀ for every row (BM ≥ 16 rows, the extra
   ones masked) and stores silu(g)·u into h.
2. `_down`: a program owns BC output columns and one of S slices of the inner neurons (split-K: C / BC programs
   alone are too few to keep the memory busy); it accumulates h·W_downᵀ over its slice below max(width), each
   row's h masked past its own width, and stores an fp32 partial sum.
3. `_sum`: the output, the partial sums of the splits (and of both modules) added and rounded once. The order of
   the additions is fixed, so a step is repeatable bit for bit (no atomics).

One row (batch-1 decoding; `ONE_ROW`) takes two kernels of its own, `_up1` and `_down1`: matrix-vector products
with no tensor-core tile to fill (`tl.dot` wants 16 rows, 15 of them padding here), each program's products summed
in registers and reduced once; the row's choice picks the module's weights on the device, so SMALL's kernels are
not launched beside BIG's; and the down projection writes the output itself, without split-K or `_sum`, since C / BC
programs of a few columns each are already enough to keep the memory busy. Their tiles are tuned once per shape on
the first call outside a CUDA graph, with the row choosing BIG (`_tuned`): an autotuner would tune on whatever the
first row chose, and a SMALL or SKIP row reads next to nothing. The ideal for a step is its weight bytes at the
memory's bandwidth; docs/benchmarks.md measures how close it comes.

With separate modules, BIG runs with widths (d_big for rows that chose BIG, else 0) and SMALL with (d_small for
rows that chose SMALL, else 0), into partial sums of their own; a module that no row chose reads no weights. With
SMALL a view of BIG's first neurons (`DuoConfig.small_view`, model/ffn.py `SmallView`), one pass over BIG serves
both: widths d_big, d_small or 0 by choice, so SMALL's weights are read as part of BIG's, never twice. A row that
skips has width 0 everywhere and gets zero. The matmuls accumulate in fp32 and round once. Needs Triton and a
CUDA device (`kernels.available.triton_usable`); tests run it through Triton's CPU interpreter. Imported only when it runs (kernels/__init__.py),
so the core import never loads Triton.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
import triton.testing
from torch import Tensor

from duollm.kernels.available import DECODE_ROWS as MAX_ROWS
from duollm.routing.route import Choice

assert (Choice.SKIP, Choice.SMALL, Choice.BIG) == (0, 1, 2)  # as `_widths` reads them


_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (the tests): one shape, no tuning
UP = [  # the first four for a few rows; the last two wider, for 32 to 64 rows (0.76 of cuBLAS at 64 with the first four)
    triton.Config({"BN": bn, "BK": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in ((32, 128, 4, 4), (64, 128, 4, 4), (16, 256, 4, 4), (64, 64, 4, 5), (128, 64, 8, 3), (128, 128, 8, 3))
]
DOWN = [
    triton.Config({"BC": bc, "BK": bk}, num_warps=w, num_stages=s)
    for bc, bk, w, s in ((16, 256, 4, 4), (32, 128, 4, 4), (16, 128, 4, 5), (32, 256, 4, 3), (64, 64, 4, 3), (64, 128, 8, 3))
]
if _INTERPRET:
    UP, DOWN = [triton.Config({"BN": 16, "BK": 16})], [triton.Config({"BC": 16, "BK": 16})]


@triton.jit
def _widths(choice, N, w_big, w_small, BM: tl.constexpr):
    """(BM,) the inner neurons each row needs of this module: w_big if it chose BIG, w_small if SMALL, else 0."""
    rows = tl.arange(0, BM)
    c = tl.load(choice + rows, mask=rows < N, other=0).to(tl.int32)  # padding rows read as SKIP (0)
    return tl.where(c == 2, w_big, tl.where(c == 1, w_small, 0))  # Choice: SKIP 0, SMALL 1, BIG 2


@triton.autotune(configs=UP, key=["C", "F", "BM"])
@triton.jit
def _up(x, choice, wg, wu, h, N, C, F, w_big, w_small, stride_w, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    width = _widths(choice, N, w_big, w_small, BM)
    f0 = tl.program_id(0) * BN
    if f0 >= tl.max(width, axis=0):  # no row needs these neurons: their weights are never read
        return
    rows = tl.arange(0, BM)
    rmask = rows < N
    cols = f0 + tl.arange(0, BN)  # inner neurons
    cmask = cols < F
    acc_g = tl.zeros((BM, BN), dtype=tl.float32)
    acc_u = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, C, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < C
        a = tl.load(x + rows[:, None] * C + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)  # (BM, BK)
        bmask = kmask[:, None] & cmask[None, :]
        g = tl.load(wg + cols[None, :] * stride_w + ks[:, None], mask=bmask, other=0.0)  # (BK, BN) = W_gateᵀ tile
        u = tl.load(wu + cols[None, :] * stride_w + ks[:, None], mask=bmask, other=0.0)
        acc_g = tl.dot(a, g, acc_g)
        acc_u = tl.dot(a, u, acc_u)
    hval = acc_g * tl.sigmoid(acc_g) * acc_u  # SwiGLU, in fp32
    tl.store(h + rows[:, None] * F + cols[None, :], hval.to(h.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


@triton.autotune(configs=DOWN, key=["C", "F", "BM", "S"])
@triton.jit
def _down(h, choice, wd, part, N, C, F, w_big, w_small, stride_d, chunk, S, BM: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr):
    width = _widths(choice, N, w_big, w_small, BM)
    top = tl.max(width, axis=0)  # inner neurons any row needs; none: nothing is read, zeros are written
    k_lo = tl.program_id(1) * chunk  # this program's share of the inner neurons (split-K)
    k_hi = tl.minimum(k_lo + chunk, top)
    rows = tl.arange(0, BM)
    rmask = rows < N
    cols = tl.program_id(0) * BC + tl.arange(0, BC)  # output columns
    cmask = cols < C
    acc = tl.zeros((BM, BC), dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BK):
        ks = k0 + tl.arange(0, BK)
        a = tl.load(h + rows[:, None] * F + ks[None, :], mask=rmask[:, None] & (ks[None, :] < tl.minimum(width[:, None], k_hi)), other=0.0)
        b = tl.load(wd + cols[None, :] * stride_d + ks[:, None], mask=(ks[:, None] < k_hi) & cmask[None, :], other=0.0)  # W_downᵀ
        acc = tl.dot(a, b, acc)
    dst = part + tl.program_id(1) * N * C + rows[:, None] * C + cols[None, :]  # fp32 partial sums, one slice per split
    tl.store(dst, acc, mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _sum(part, out, P, NC, BLOCK: tl.constexpr):
    """out = the sum of P fp32 slices of NC elements, rounded once: the modules' and the splits' partial sums."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < NC
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for p in range(0, P):
        acc += tl.load(part + p * NC + i, mask=m, other=0.0)
    tl.store(out + i, acc.to(out.dtype.element_ty), mask=m)


@triton.jit
def _pick(choice, big_ptr, small_ptr, w_big, w_small, stride_big, stride_small):
    """One row's module: its weights' pointer, row stride and width (BIG's, SMALL's, or width 0 for SKIP)."""
    c = tl.load(choice).to(tl.int32)
    ptr, stride, width = small_ptr, stride_small, tl.where(c == 1, w_small, 0)
    if c == 2:
        ptr, stride, width = big_ptr, stride_big, w_big
    return ptr, stride, width


@triton.jit
def _glu_block(x, wg, wu, h, stride, f0, width, C, BN: tl.constexpr, BK: tl.constexpr):
    """h[f0:f0+BN] = silu(x·W_gateᵀ)·(x·W_upᵀ) for one row x (C,), the neurons below `width` only: the products
    summed over K in registers and reduced once (no tensor-core tile: `tl.dot` wants 16 rows, 15 of them padding)."""
    cols = f0 + tl.arange(0, BN)
    cmask = cols < width
    acc_g = tl.zeros((BN, BK), dtype=tl.float32)
    acc_u = tl.zeros((BN, BK), dtype=tl.float32)
    for k0 in range(0, C, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < C
        xv = tl.load(x + ks, mask=kmask, other=0.0).to(tl.float32)
        m = cmask[:, None] & kmask[None, :]
        g = tl.load(wg + cols[:, None] * stride + ks[None, :], mask=m, other=0.0)  # (BN, BK), contiguous along K
        u = tl.load(wu + cols[:, None] * stride + ks[None, :], mask=m, other=0.0)
        acc_g += g.to(tl.float32) * xv[None, :]
        acc_u += u.to(tl.float32) * xv[None, :]
    gv, uv = tl.sum(acc_g, axis=1), tl.sum(acc_u, axis=1)
    tl.store(h + cols, (gv * tl.sigmoid(gv) * uv).to(h.dtype.element_ty), mask=cmask)


@triton.jit
def _dot_block(v, w, stride, out, c0, N, K, BC: tl.constexpr, BK: tl.constexpr):
    """out[c0:c0+BC] = v[:K]·Wᵀ for one row v and the output columns c0.. below N; W (N, ≥K) row-major."""
    cols = c0 + tl.arange(0, BC)
    cmask = cols < N
    acc = tl.zeros((BC, BK), dtype=tl.float32)
    for k0 in range(0, K, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < K
        vv = tl.load(v + ks, mask=kmask, other=0.0).to(tl.float32)
        wt = tl.load(w + cols[:, None] * stride + ks[None, :], mask=cmask[:, None] & kmask[None, :], other=0.0)
        acc += wt.to(tl.float32) * vv[None, :]
    tl.store(out + cols, tl.sum(acc, axis=1).to(out.dtype.element_ty), mask=cmask)


@triton.jit
def _up1(x, choice, gb, ub, gs, us, h, C, w_big, w_small, sb, ss, BN: tl.constexpr, BK: tl.constexpr):
    """h[:width] = silu(x·W_gateᵀ)·(x·W_upᵀ) for one row, over the module its choice names; BN neurons a program."""
    wg, stride, width = _pick(choice, gb, gs, w_big, w_small, sb, ss)
    wu, _, _ = _pick(choice, ub, us, w_big, w_small, sb, ss)
    f0 = tl.program_id(0) * BN
    if f0 >= width:  # past the chosen module's neurons (all of them for SKIP): nothing is read
        return
    _glu_block(x, wg, wu, h, stride, f0, width, C, BN, BK)


@triton.jit
def _down1(h, choice, db, ds, out, C, w_big, w_small, sb, ss, BC: tl.constexpr, BK: tl.constexpr):
    """out[cols] = h[:width]·W_downᵀ for one row and BC output columns a program; zero for SKIP."""
    wd, stride, width = _pick(choice, db, ds, w_big, w_small, sb, ss)
    _dot_block(h, wd, stride, out, tl.program_id(0) * BC, C, width, BC, BK)


@triton.jit
def _glu1(x, wg, wu, h, C, F, stride, BN: tl.constexpr, BK: tl.constexpr):
    """A fixed module's gate and up for one row: h = silu(x·W_gateᵀ)·(x·W_upᵀ), (F,)."""
    _glu_block(x, wg, wu, h, stride, tl.program_id(0) * BN, F, C, BN, BK)


@triton.jit
def _gemv1(x, w, out, K, N, stride, BC: tl.constexpr, BK: tl.constexpr):
    """out = x·Wᵀ for one row x (K,) and W (N, K): a matrix-vector product, BC outputs a program."""
    _dot_block(x, w, stride, out, tl.program_id(0) * BC, N, K, BC, BK)


ONE_ROW = True  # one row takes _up1/_down1 (a module variable, so that a benchmark can compare both paths)
UP1 = [(8, 512, 4), (16, 256, 4), (16, 512, 8), (32, 256, 8), (32, 128, 4), (64, 128, 8)]  # (BN, BK, warps)
# (BC, BK, warps). Few columns a program, so that C / BC programs fill the SMs (paper-1.4b: 320 to 640 for 132), and
# long rows of K, so that each SM has the ~36 KB in flight that 4.8 TB/s at ~1 µs of latency asks of it
DOWN1 = [(4, 512, 4), (8, 256, 4), (8, 512, 4), (16, 256, 8), (4, 1024, 8), (16, 512, 8), (8, 1024, 8), (4, 2048, 8)]
_BEST: dict[tuple, tuple[int, int, int]] = {}  # (kernel, C, F, dtype, device) -> its fastest tile, found once


def _tuned(key: tuple, configs: list[tuple[int, int, int]], launch) -> tuple[int, int, int]:
    """The fastest of `configs` for `key`, timed once (triton.testing.do_bench) by `launch(config, all_big=True)`;
    the first config in the interpreter, or while a CUDA graph is being captured untuned, which cannot time
    anything (`Decoder` warms its steps up before it records them, so its graphs run tuned tiles)."""
    if key in _BEST:
        return _BEST[key]
    if _INTERPRET or key[-1].type != "cuda" or torch.cuda.is_current_stream_capturing():
        return configs[0]
    times = {cfg: triton.testing.do_bench(lambda cfg=cfg: launch(cfg, True), warmup=5, rep=25) for cfg in configs}
    _BEST[key] = min(times, key=times.get)
    return _BEST[key]


def _one_row(x: Tensor, choice: Tensor, big: tuple[Tensor, Tensor, Tensor], small: tuple[Tensor, Tensor, Tensor], d_small: int) -> Tensor:
    """(1, C): the routed FFN of one row through the module its choice names; two launches, no host read."""
    C = x.shape[1]
    (gb, ub, db), (gs, us, ds) = big, small
    d_big = gb.shape[0]
    assert gb.stride(1) == gs.stride(1) == db.stride(1) == ds.stride(1) == 1 and ub.stride() == gb.stride() and us.stride() == gs.stride()
    h = x.new_empty(d_big)  # written up to the chosen width, read only there
    out = torch.empty_like(x)
    bigs = []  # the tuning runs the row as BIG, the most it reads; made only then, so a step launches two kernels

    def picks(all_big: bool) -> Tensor:
        if all_big and not bigs:
            bigs.append(torch.full_like(choice[:1], 2))
        return bigs[0] if all_big else choice

    def up(cfg, all_big=False):
        bn, bk, w = cfg
        _up1[(triton.cdiv(d_big, bn),)](
            x, picks(all_big), gb, ub, gs, us, h, C, d_big, d_small, gb.stride(0), gs.stride(0), BN=bn, BK=bk, num_warps=w
        )

    def down(cfg, all_big=False):
        bc, bk, w = cfg
        _down1[(triton.cdiv(C, bc),)](
            h, picks(all_big), db, ds, out, C, d_big, d_small, db.stride(0), ds.stride(0), BC=bc, BK=bk, num_warps=w
        )

    where = (C, d_big, x.dtype, x.device)
    up(_tuned(("up1", *where), UP1, up))
    down(_tuned(("down1", *where), DOWN1, down))
    return out


def gemv(x: Tensor, w: Tensor) -> Tensor:
    """x (1, K) · wᵀ, w (N, K) row-major: (1, N), through `_gemv1` (tiles tuned once per shape, as the FFN's)."""
    N, K = w.shape
    assert x.shape == (1, K) and w.stride(1) == 1, (tuple(x.shape), tuple(w.shape), w.stride())
    x = x.contiguous()
    out = x.new_empty(1, N)

    def run(cfg, _all_big=False):
        bc, bk, nw = cfg
        _gemv1[(triton.cdiv(N, bc),)](x, w, out, K, N, w.stride(0), BC=bc, BK=bk, num_warps=nw)

    run(_tuned(("gemv1", K, N, x.dtype, x.device), DOWN1, run))  # the down projection's shape of work: DOWN1's tiles
    return out


def glu(x: Tensor, wg: Tensor, wu: Tensor) -> Tensor:
    """silu(x·W_gateᵀ)·(x·W_upᵀ) for x (1, C), W_gate and W_up (F, C) row-major with one stride: (1, F), `_glu1`."""
    F, C = wg.shape
    assert x.shape == (1, C) and wu.shape == wg.shape and wg.stride(1) == 1 and wu.stride() == wg.stride()
    x = x.contiguous()
    h = x.new_empty(1, F)

    def run(cfg, _all_big=False):
        bn, bk, nw = cfg
        _glu1[(triton.cdiv(F, bn),)](x, wg, wu, h, C, F, wg.stride(0), BN=bn, BK=bk, num_warps=nw)

    run(_tuned(("glu1", C, F, x.dtype, x.device), UP1, run))
    return h


def _splits(F: int, C: int, device: torch.device) -> int:
    """Slices of the inner neurons for the down projection: with one output tile of 16 columns per program, C / 16
    programs alone are too few to keep the memory busy (paper-1.4b: 160 for 132 SMs), so each tile's sum over F is
    split until there are some four programs per SM. Two in the interpreter, to test the path."""
    if _INTERPRET or device.type != "cuda":
        return 2
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(8, -(-4 * sms // -(-C // 16)), F // 128))


def _module(x: Tensor, choice: Tensor, weights: tuple[Tensor, Tensor, Tensor], w_big: int, w_small: int, part: Tensor) -> None:
    """part (S, N, C) fp32 = one module's output for each row's first `width` inner neurons (w_big, w_small or 0 by
    choice), in S partial sums; `weights` its gate (F, C), up (F, C) and down (C, F), row-major."""
    N, C = x.shape
    wg, wu, wd = weights
    F, S = wg.shape[0], part.shape[0]
    assert wg.stride(1) == 1 and wu.stride() == wg.stride() and wd.stride(1) == 1, "row-major weights"
    BM = max(16, triton.next_power_of_2(N))  # tl.dot wants 16 rows or more; the extra ones are masked
    h = x.new_empty(N, F)  # written only where some row needs it, read only there
    _up[lambda meta: (triton.cdiv(F, meta["BN"]),)](x, choice, wg, wu, h, N, C, F, w_big, w_small, wg.stride(0), BM=BM)
    chunk = triton.cdiv(F, S)
    _down[lambda meta: (triton.cdiv(C, meta["BC"]), S)](h, choice, wd, part, N, C, F, w_big, w_small, wd.stride(0), chunk, S, BM=BM)


def routed_ffn_decode(
    x: Tensor, choice: Tensor, big: tuple[Tensor, Tensor, Tensor], small: tuple[Tensor, Tensor, Tensor] | None, d_small: int
) -> Tensor:
    """The routed FFN of `x` (N, C) for per-token choices (N,) uint8, N <= MAX_ROWS, without autograd and without a
    host read: (N, C). `big` and `small`: each module's (gate, up, down) weights in x's dtype; `small` None when
    SMALL is BIG's first `d_small` neurons (a SmallView), which one pass over BIG serves. Called through the
    custom op `duollm::routed_ffn_decode` (kernels/__init__.py), which torch.compile keeps whole."""
    N, C = x.shape
    if N > MAX_ROWS:
        raise ValueError(f"the decode kernel takes at most {MAX_ROWS} rows, got {N}")
    if N == 1 and ONE_ROW and (small is None or small[0].shape[0] <= big[0].shape[0]):  # h is sized by BIG's width
        return _one_row(x, choice, big, big if small is None else small, d_small)
    d_big = big[0].shape[0]
    S = _splits(d_big, C, x.device)
    part = x.new_empty(1 if small is None else 2, S, N, C, dtype=torch.float32)  # every slice is written
    if small is None:
        _module(x, choice, big, d_big, d_small, part[0])
    else:
        _module(x, choice, big, d_big, 0, part[0])
        _module(x, choice, small, 0, d_small, part[1])
    out = torch.empty_like(x)
    BLOCK = 1024
    _sum[(triton.cdiv(N * C, BLOCK),)](part, out, part.shape[0] * S, N * C, BLOCK=BLOCK)
    return out

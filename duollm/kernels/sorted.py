"""The routed FFN for prefill and training on a GPU: tokens sorted by choice on the device, each module run as
one dense matmul chain over its own contiguous rows, one host read of the three counts per layer.

Readable reference: `model/ffn.py` `RoutedFFN` (per choice: nonzero → gather → module → scatter). This path
does the same work with fewer passes (docs/speed.md, "The fast paths"):

1. key = BIG→0, SMALL→1, SKIP→2 per token; `perm` = a stable sort of the keys; the counts (n_big, n_small,
   n_skip) are read on the host, once per layer (the reference reads two counts, one sync each), unless the
   caller hands them over: a route drawn on the host (random-routing training) is counted there, with no read.
2. One gather of the routed rows in sorted order: xs = u[perm[:n_big + n_small]]. The big module runs on
   xs[:n_big], the small one on xs[n_big:], both contiguous slices (no copy), through cuBLAS at exact sizes:
   no FLOP is spent on a token that did not choose the module, and a skipped token is never read.
3. The outputs are written in place into one zero tensor at their tokens' rows (`index_copy_`).
   When every token makes the same choice there is no gather or scatter at all: the module runs on `u`.

Why a host read at all: the matmuls need their row counts as shapes. The sync-free alternative
(kernels/grouped.py, device-side offsets) is what CUDA graphs and `torch.compile(fullgraph=True)` need, but
with `torch._grouped_mm` it spends memory passes on every row of the worst case; at the paper's width one
sync per layer costs far less than that (docs/benchmarks.md, `bench_ffn`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.routing.route import Choice


def routed_ffn_sorted(u: Tensor, choice: Tensor, small, big, counts: tuple[int, int, int] | None = None) -> Tensor:
    """Same result as `RoutedFFN(u, choice)` for per-token choices (B, T) uint8. `counts` (BIG, SMALL, SKIP), when
    the caller knows them (a route drawn on the host: DuoLM counts it there), saves the one host read."""
    B, T, C = u.shape
    N = B * T
    key = Choice.BIG - choice.reshape(N).long()  # (N,) BIG→0, SMALL→1, SKIP→2
    if counts is None:
        counts = (key[:, None] == torch.arange(3, device=u.device)).sum(0).tolist()  # one host read
    n_big, n_small, n_skip = counts
    if n_big == N:
        return big(u)
    if n_small == N:
        return small(u)
    if n_skip == N:
        return torch.zeros_like(u)
    perm = torch.argsort(key, stable=True)  # (N,) big rows, then small, then skip
    xs = u.reshape(N, C).index_select(0, perm[: n_big + n_small])  # (n_big + n_small, C), the only gather
    parts = [(perm[:n_big], big, xs[:n_big]), (perm[n_big : n_big + n_small], small, xs[n_big:])]
    out = None
    for rows, module, x in parts:
        if not len(rows):
            continue
        y = module(x)  # (n, C), in the modules' dtype (bf16 under autocast)
        out = y.new_zeros(N, C) if out is None else out
        out.index_copy_(0, rows, y)  # skipped rows stay zero
    return out.view(B, T, C)

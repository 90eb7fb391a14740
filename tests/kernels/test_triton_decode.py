"""The decode step's routed FFN (kernels/triton_decode.py, forward only) equals the reference, with SMALL as its own
module and as a view of BIG: on a GPU in bf16 (marked gpu), and through Triton's CPU interpreter where Triton is
installed. Run: pytest tests/kernels/test_triton_decode.py"""

import pytest
import torch

from duollm.model.ffn import RoutedFFN
from tests.kernels.interp import check_interpreted, gpu_triton, interpreter

MIXES = {"mixed": (0.3, 0.3, 0.4), "all-big": (0.0, 0.0, 1.0), "all-small": (0.0, 1.0, 0.0), "all-skip": (1.0, 0.0, 0.0)}


def check(device: str, dtype: torch.dtype, atol: float) -> None:
    from duollm.kernels import triton_decode

    saved = triton_decode.ONE_ROW
    try:
        for one_row in (True, False):  # one row through the matrix-vector kernels, then through the tiled ones
            triton_decode.ONE_ROW = one_row
            check_paths(device, dtype, atol)
    finally:
        triton_decode.ONE_ROW = saved
    check_matrix_vector(device, dtype, atol)


def check_matrix_vector(device: str, dtype: torch.dtype, atol: float) -> None:
    """The one-row kernels of a whole step (`gemv`, `glu`) against F.linear and SwiGLU's hidden, for shapes off the
    tiles, and for the strided weights of SMALL as a view of BIG (down's first n columns)."""
    from torch.nn.functional import linear, silu

    from duollm.kernels.triton_decode import gemv, glu

    torch.manual_seed(1)
    for N, K in ((5, 64), (96, 40), (200, 1030)):
        x, w = torch.randn(1, K, device=device, dtype=dtype), torch.randn(N, K, device=device, dtype=dtype) / K**0.5
        assert torch.allclose(gemv(x, w).float(), linear(x, w).float(), atol=atol * K**0.5, rtol=atol), (N, K)
        wide = torch.randn(N, K + 7, device=device, dtype=dtype)[:, :K]  # (N, K) with row stride K + 7
        assert torch.allclose(gemv(x, wide).float(), linear(x, wide).float(), atol=atol * K**0.5, rtol=atol), (N, K)
        wg, wu = (torch.randn(2 * N, K, device=device, dtype=dtype) / K**0.5).chunk(2)  # two halves of one matrix (model/fuse.py)
        ref = silu(linear(x, wg).float()) * linear(x, wu).float()
        assert torch.allclose(glu(x, wg, wu).float(), ref, atol=atol * K, rtol=atol * 4), (N, K)


def check_paths(device: str, dtype: torch.dtype, atol: float) -> None:
    from duollm.kernels import routed_ffn_decode

    torch.manual_seed(0)
    for view in (False, True):
        for C, ds, db in ((64, 16, 256), (96, 40, 200)):  # widths off the tile sizes
            ffn = RoutedFFN(C, ds, db, kernel="reference", small_view=view).to(device, dtype)
            for B, T in ((1, 1), (3, 1), (5, 8), (64, 1)):
                u = torch.randn(B, T, C, device=device, dtype=dtype)
                for name, mix in MIXES.items():
                    choice = torch.multinomial(torch.tensor(mix), B * T, replacement=True).to(torch.uint8).view(B, T).to(device)
                    with torch.no_grad():
                        ref, got = ffn(u, choice).float(), routed_ffn_decode(u, choice, ffn.small, ffn.big).float()
                    err = (got - ref).abs().max()
                    assert torch.allclose(got, ref, atol=atol, rtol=atol), (view, C, B, T, name, err)
                    assert (got[choice == 0] == 0).all()  # a skipping row gets exactly zero
                # a column of a (B, T, L) route, as the model passes it: strided choices
                route = torch.randint(0, 3, (B, T, 3), dtype=torch.uint8).to(device)
                with torch.no_grad():
                    ref, got = ffn(u, route[..., 1]).float(), routed_ffn_decode(u, route[..., 1], ffn.small, ffn.big).float()
                assert torch.allclose(got, ref, atol=atol, rtol=atol), (view, C, B, T, "strided", (got - ref).abs().max())


def test_rows_past_the_limit_are_refused():
    pytest.importorskip("triton")
    from duollm.kernels import DECODE_ROWS, routed_ffn_decode

    ffn = RoutedFFN(16, 8, 32)
    with pytest.raises(ValueError, match="at most"):
        routed_ffn_decode(torch.zeros(1, DECODE_ROWS + 1, 16), torch.zeros(1, DECODE_ROWS + 1, dtype=torch.uint8), ffn.small, ffn.big)


@pytest.mark.gpu
@gpu_triton
def test_bf16_on_gpu_equals_reference():
    check("cuda", torch.bfloat16, 2e-2)


@pytest.mark.slow
@interpreter
def test_interpreted_on_cpu_equals_reference():
    check_interpreted("tests.kernels.test_triton_decode")

"""The Triton routed FFN (forward only) equals the reference: on a GPU in bf16 (marked gpu), and through Triton's
CPU interpreter where Triton is installed (it is not in CI). Run: pytest tests/kernels/test_triton_ffn.py"""

import pytest
import torch

from duollm.model.ffn import RoutedFFN
from tests.kernels.interp import check_interpreted, gpu_triton, interpreter

MIXES = {"mixed": (0.3, 0.3, 0.4), "all-big": (0.0, 0.0, 1.0), "all-small": (0.0, 1.0, 0.0), "all-skip": (1.0, 0.0, 0.0)}


def check(device: str, dtype: torch.dtype, atol: float) -> None:
    from duollm.kernels.triton_ffn import routed_ffn_fused

    torch.manual_seed(0)
    for C, ds, db, N in ((64, 16, 256, 37), (96, 32, 384, 1000)):  # rows and widths off the tile sizes
        ffn = RoutedFFN(C, ds, db, kernel="reference").to(device, dtype)
        u = torch.randn(1, N, C, device=device, dtype=dtype)
        for mix in MIXES.values():
            choice = torch.multinomial(torch.tensor(mix), N, replacement=True).to(torch.uint8).view(1, N).to(device)
            with torch.no_grad():
                ref, got = ffn(u, choice).float(), routed_ffn_fused(u, choice, ffn.small, ffn.big).float()
            assert torch.allclose(got, ref, atol=atol, rtol=atol), (C, N, mix, (got - ref).abs().max())


@pytest.mark.gpu
@gpu_triton
def test_bf16_on_gpu_equals_reference():
    check("cuda", torch.bfloat16, 2e-2)


@pytest.mark.slow
@interpreter
def test_interpreted_on_cpu_equals_reference():
    check_interpreted("tests.kernels.test_triton_ffn")

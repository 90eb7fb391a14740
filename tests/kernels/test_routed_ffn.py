"""The fast routed FFNs (sorted: one host read per layer; grouped: sync-free) equal the reference, forward and
gradients. Run: pytest tests/kernels"""

import pytest
import torch

from duollm import DuoConfig, DuoLM
from duollm.kernels.grouped import available, routed_ffn_grouped
from duollm.kernels.masked import routed_ffn_masked
from duollm.kernels.sorted import routed_ffn_sorted
from duollm.model.ffn import RoutedFFN

pytestmark = pytest.mark.skipif(not available(), reason="torch._grouped_mm is missing from this torch")

MIXES = {
    "mixed": (0.3, 0.3, 0.4),
    "all-big": (0.0, 0.0, 1.0),
    "all-small": (0.0, 1.0, 0.0),
    "all-skip": (1.0, 0.0, 0.0),
    "no-small": (0.5, 0.0, 0.5),
}


def grads(out, g, params):
    got = torch.autograd.grad((out * g).sum(), params, allow_unused=True) if out.requires_grad else [None] * len(params)
    return [torch.zeros_like(p) if x is None else x for x, p in zip(got, params, strict=True)]


KERNELS = {"grouped": routed_ffn_grouped, "sorted": routed_ffn_sorted, "masked": routed_ffn_masked}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mix", MIXES.values(), ids=MIXES.keys())
def test_equals_reference(mix, kernel):
    torch.manual_seed(0)
    ffn = RoutedFFN(16, 4, 64)
    u = torch.randn(3, 7, 16, requires_grad=True)
    choice = (
        torch.multinomial(torch.tensor(mix), 21, replacement=True, generator=torch.Generator().manual_seed(1)).to(torch.uint8).view(3, 7)
    )
    params = [u, *ffn.parameters()]
    ref, fast = ffn(u, choice), KERNELS[kernel](u, choice, ffn.small, ffn.big)
    assert torch.allclose(fast, ref, atol=1e-5)
    g = torch.randn_like(ref)
    for a, b in zip(grads(ref, g, params), grads(fast, g, params), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_model_with_fast_kernel_equals_reference(kernel):
    torch.manual_seed(0)
    ref = DuoLM(DuoConfig(n_layer=3, vocab_size=64, kernel="reference"))
    fast = DuoLM(DuoConfig(n_layer=3, vocab_size=64, kernel=kernel))
    fast.load_state_dict(ref.state_dict())
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(2))
    route = torch.randint(0, 3, (2, 10, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    a, b = ref(ids, route=route, targets=ids), fast(ids, route=route, targets=ids)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    a.loss.backward(), b.loss.backward()
    for (n, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), n


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("kernel", KERNELS)
def test_bf16_on_gpu_equals_reference(kernel):
    torch.manual_seed(0)
    ffn = RoutedFFN(256, 64, 1024, kernel="reference").cuda().bfloat16()
    u = torch.randn(4, 512, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    choice = torch.randint(0, 3, (4, 512), dtype=torch.uint8, device="cuda")
    params = [u, *ffn.parameters()]
    ref, fast = ffn(u, choice), KERNELS[kernel](u, choice, ffn.small, ffn.big)
    assert torch.allclose(fast.float(), ref.float(), atol=2e-2, rtol=2e-2)
    g = torch.randn_like(ref)
    for a, b in zip(grads(ref, g, params), grads(fast, g, params), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=5e-2, rtol=5e-2)


def test_training_with_fast_kernels_takes_the_same_steps(tmp_path):
    """Random per-token routing, forward and backward through the fast paths: the same losses as the reference."""
    from duollm.cli import main
    from duollm.train.loop import read_metrics

    losses = {}
    for kernel in ("reference", "grouped", "sorted"):
        out = tmp_path / kernel
        args = [
            "train",
            "--out",
            str(out),
            "--preset",
            "debug",
            "--steps",
            "4",
            "--json",
            "--train.log_every=1",
            f"--model.kernel={kernel}",
        ]
        assert main(args) == 0
        losses[kernel] = [m["loss"] for m in read_metrics(out / "metrics.jsonl")]
    assert len(losses["grouped"]) == 4 and losses["grouped"] == pytest.approx(losses["reference"], abs=1e-5)
    assert losses["sorted"] == pytest.approx(losses["reference"], abs=1e-5)


def test_compiles_whole_and_once():
    """One graph (no host sync breaks it) that serves every route of the same shape without recompiling."""
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    ffn = RoutedFFN(16, 16, 64).bfloat16()  # the fake kernel of _grouped_mm takes bf16, as the GPU one does
    fn = torch.compile(routed_ffn_grouped, fullgraph=True, dynamic=False, backend="eager")
    u = torch.randn(2, 8, 16).bfloat16()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in range(3):
            c = torch.randint(0, 3, (2, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
            assert torch.allclose(fn(u, c, ffn.small, ffn.big).float(), ffn(u, c).float(), atol=1e-2)


def test_a_route_drawn_on_the_host_hands_its_counts_to_the_sorted_path(monkeypatch):
    # random-routing training draws routes on the host: DuoLM counts each layer's choices there and the sorted path
    # takes them instead of reading them back from the device (no host read per layer); the result is the same
    import duollm.kernels as kernels
    from duollm.routing.route import host_counts
    from duollm.routing.sample import random_route

    seen = []

    def recording(u, choice, small, big, counts=None):
        seen.append(counts)
        return routed_ffn_sorted(u, choice, small, big, counts)

    monkeypatch.setitem(kernels.PATHS, "sorted", recording)
    cfg = DuoConfig(n_layer=3, n_head=4, n_kv_head=4, d_model=32, d_big=64, d_small=8, vocab_size=64, max_seq_len=16)
    torch.manual_seed(0)
    fast = DuoLM(DuoConfig(**{**cfg.__dict__, "kernel": "sorted"}))
    ref = DuoLM(DuoConfig(**{**cfg.__dict__, "kernel": "reference"}))
    ref.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    route = random_route((2, 16, 3), 0.4, 0.4, 0.2, torch.Generator().manual_seed(2))  # (B, T, L) on the host
    torch.testing.assert_close(fast(ids, route=route).logits, ref(ids, route=route).logits)
    expected = [tuple(int((route[..., l] == c).sum()) for c in (2, 1, 0)) for l in range(3)]  # BIG, SMALL, SKIP
    assert seen == expected and host_counts(route).tolist() == [list(e) for e in expected]

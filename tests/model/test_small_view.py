"""SMALL stored as a view of BIG's first neurons (`DuoConfig.small_view`, model/ffn.py `SmallView`): reordering BIG's
neurons keeps its function; every FFN path (reference per token, static, soft, the CPU kernels) gives for the view
what it gives for SMALL held as a copy of the same slice; gradients of SMALL land in BIG; no SMALL parameter is
counted or saved. Run: pytest tests/model/test_small_view.py"""

import copy
import json

import pytest
import torch
from safetensors import safe_open

from duollm import DuoConfig, DuoLM
from duollm.config import RunConfig, from_dict, save_json
from duollm.kernels import grouped
from duollm.kernels.grouped import routed_ffn_grouped
from duollm.kernels.masked import routed_ffn_masked
from duollm.kernels.sorted import routed_ffn_sorted
from duollm.model.ffn import RoutedFFN, SmallView, SwiGLU
from duollm.pretrained.slice import keep_first, slice_small
from duollm.routing.route import Choice
from duollm.runs import checkpoint

CFG = dict(n_layer=3, d_model=32, n_head=4, d_big=128, d_small=16, vocab_size=64, max_seq_len=32)
KERNELS = {"sorted": routed_ffn_sorted, "masked": routed_ffn_masked}
if grouped.available():
    KERNELS["grouped"] = routed_ffn_grouped


def pair(**over) -> tuple[DuoLM, DuoLM]:
    """(SMALL a copy of the slice, SMALL a view of the same slice), the same weight-only slice of one random model."""
    torch.manual_seed(0)
    plain = DuoLM(DuoConfig(**{**CFG, **over}))
    view = copy.deepcopy(plain)
    slice_small(plain)
    slice_small(view, view=True)
    return plain, view


def mixed(shape=(3, 10), seed=1) -> torch.Tensor:
    return torch.randint(0, 3, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_reordering_big_s_neurons_keeps_its_function():
    torch.manual_seed(0)
    big = SwiGLU(32, 96)
    u = torch.randn(40, 32)
    before = big(u)
    keep = torch.tensor([3, 7, 40, 41, 90])
    gate, down = big.gate.weight.clone(), big.down.weight.clone()
    keep_first(big, keep)
    assert torch.equal(big.gate.weight[:5], gate[keep]) and torch.equal(big.down.weight[:, :5], down[:, keep])
    rest = [j for j in range(96) if j not in keep.tolist()]
    assert torch.equal(big.gate.weight[5:], gate[rest])  # the others follow in their own order
    assert torch.allclose(big(u), before, atol=1e-6, rtol=0)  # the same sum, in another order


def test_the_view_has_no_parameters_and_the_count_drops_by_small_s():
    plain, view = pair()
    L, C, d = CFG["n_layer"], CFG["d_model"], CFG["d_small"]
    n_plain, n_view = sum(p.numel() for p in plain.parameters()), sum(p.numel() for p in view.parameters())
    assert n_plain - n_view == L * 3 * C * d
    assert not any(".small." in n for n in view.state_dict())
    assert view.cfg.small_view and not plain.cfg.small_view
    fresh = DuoLM(DuoConfig(**CFG, small_view=True))  # the same model built from its config
    assert set(fresh.state_dict()) == set(view.state_dict()) and sum(p.numel() for p in fresh.parameters()) == n_view
    assert isinstance(fresh.blocks[0].ffn.small, SmallView)


@torch.no_grad()
def test_the_view_reads_the_same_weights_as_the_copy():
    plain, view = pair()
    for a, b in zip(plain.blocks, view.blocks, strict=True):
        for name in ("gate", "up", "down"):
            assert torch.equal(getattr(a.ffn.small, name).weight, getattr(b.ffn.small, name).weight)
        assert b.ffn.small.gate.weight.data_ptr() == b.ffn.big.gate.weight.data_ptr()  # storage shared, not copied
        assert b.ffn.small.down.weight.data_ptr() == b.ffn.big.down.weight.data_ptr()


@torch.no_grad()
def test_every_ffn_path_gives_the_copy_s_output():
    plain, view = pair()
    u = torch.randn(3, 10, CFG["d_model"])
    choice = mixed()
    soft = torch.softmax(torch.randn(3, 10, 3), -1)
    for a, b in zip(plain.blocks, view.blocks, strict=True):
        fa, fb = a.ffn, b.ffn
        fa.kernel = fb.kernel = "reference"
        assert torch.equal(fb(u, torch.tensor(Choice.SMALL, dtype=torch.uint8)), fa(u, torch.tensor(Choice.SMALL, dtype=torch.uint8)))
        assert torch.equal(fb(u, torch.tensor(Choice.SKIP, dtype=torch.uint8)), fa(u, torch.tensor(Choice.SKIP, dtype=torch.uint8)))
        assert torch.allclose(
            fb(u, torch.tensor(Choice.BIG, dtype=torch.uint8)), fa(u, torch.tensor(Choice.BIG, dtype=torch.uint8)), atol=1e-6
        )
        small_or_skip = torch.where(choice == Choice.BIG, Choice.SMALL, choice)  # no BIG: SMALL rows are bit for bit
        assert torch.equal(fb(u, small_or_skip), fa(u, small_or_skip))
        assert torch.allclose(fb(u, choice), fa(u, choice), atol=1e-6)  # reference per token
        assert torch.allclose(fb(u, soft), fa(u, soft), atol=1e-6)  # soft weights (B, T, 3)
        for name, kernel in KERNELS.items():
            assert torch.equal(kernel(u, small_or_skip, fb.small, fb.big), fa(u, small_or_skip)), name
            assert torch.allclose(kernel(u, choice, fb.small, fb.big), fa(u, choice), atol=1e-6), name


@pytest.mark.parametrize("kernel", ["reference", *KERNELS])
@torch.no_grad()
def test_the_model_under_every_route_gives_the_copy_s_logits(kernel):
    plain, view = pair(kernel=kernel)
    ids = torch.randint(0, CFG["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(2))
    L = CFG["n_layer"]
    all_small = torch.full((L,), Choice.SMALL, dtype=torch.uint8)
    assert torch.equal(view(ids, route=all_small).logits, plain(ids, route=all_small).logits)
    for route in (None, torch.tensor([2, 1, 0], dtype=torch.uint8), mixed((2, 12, L), seed=3)):
        assert torch.allclose(view(ids, route=route).logits, plain(ids, route=route).logits, atol=1e-5)


def test_small_s_gradients_land_in_big_s_first_neurons():
    plain, view = pair()
    ids = torch.randint(0, CFG["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(2))
    L, d = CFG["n_layer"], CFG["d_small"]
    all_small = torch.full((L,), Choice.SMALL, dtype=torch.uint8)
    plain(ids, route=all_small, targets=ids).loss.backward()
    view(ids, route=all_small, targets=ids).loss.backward()
    for a, b in zip(plain.blocks, view.blocks, strict=True):
        g = b.ffn.big.gate.weight.grad
        assert torch.allclose(g[:d], a.ffn.small.gate.weight.grad, atol=1e-7) and not g[d:].any()  # only SMALL's rows
        assert torch.allclose(b.ffn.big.up.weight.grad[:d], a.ffn.small.up.weight.grad, atol=1e-7)
        gd = b.ffn.big.down.weight.grad
        assert torch.allclose(gd[:, :d], a.ffn.small.down.weight.grad, atol=1e-7) and not gd[:, d:].any()
    # a mixed route: BIG's first rows learn from both uses, SMALL's and BIG's
    plain.zero_grad(), view.zero_grad()
    route = mixed((2, 12, L), seed=4)
    plain(ids, route=route, targets=ids).loss.backward()
    view(ids, route=route, targets=ids).loss.backward()
    for a, b in zip(plain.blocks, view.blocks, strict=True):
        assert a.ffn.small.gate.weight.grad.abs().sum() > 0 and a.ffn.big.gate.weight.grad.abs().sum() > 0
        kept = [int((a.ffn.big.gate.weight == row).all(1).nonzero()) for row in b.ffn.big.gate.weight[:d]]  # plain's order
        want = a.ffn.small.gate.weight.grad + a.ffn.big.gate.weight.grad[kept]  # (d, C): SMALL's use plus BIG's
        assert torch.allclose(b.ffn.big.gate.weight.grad[:d], want, atol=1e-6)


def test_a_training_step_moves_big_through_small():
    _, view = pair()
    opt = torch.optim.SGD(view.parameters(), lr=0.1)
    before = view.blocks[0].ffn.big.gate.weight.detach().clone()
    ids = torch.randint(0, CFG["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(2))
    view(ids, route=torch.full((CFG["n_layer"],), Choice.SMALL, dtype=torch.uint8), targets=ids).loss.backward()
    opt.step()
    after = view.blocks[0].ffn.big.gate.weight.detach()
    d = CFG["d_small"]
    assert not torch.equal(after[:d], before[:d]) and torch.equal(after[d:], before[d:])
    assert torch.equal(view.blocks[0].ffn.small.gate.weight, after[:d])  # SMALL reads the updated weights


def test_train_runs_with_a_view(tmp_path):
    from duollm.cli import main
    from duollm.runs.load import load_run

    args = ["train", "--out", str(tmp_path / "r"), "--preset", "debug", "--steps", "3", "--json", "--model.small_view=true"]
    assert main(args) == 0
    cfg, model, _ = load_run(tmp_path / "r")
    assert cfg.model.small_view and not any(".small." in n for n, _ in model.named_parameters())


def test_checkpoint_and_config_round_trip(tmp_path):
    _, view = pair()
    cfg = RunConfig(model=view.cfg)
    checkpoint.save_weights_only(tmp_path, view, 0, save_json(cfg))
    with safe_open(str(tmp_path / "ckpt" / "step-000000" / "model.safetensors"), "pt") as f:
        assert not any(".small." in k for k in f.keys())
    loaded_cfg = from_dict(RunConfig, json.loads(save_json(cfg)))
    assert loaded_cfg.model.small_view
    model = DuoLM(loaded_cfg.model)
    checkpoint.load_weights(checkpoint.latest(tmp_path)[1], model)
    ids = torch.randint(0, CFG["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(2))
    all_small = torch.full((CFG["n_layer"],), Choice.SMALL, dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(model(ids, route=all_small).logits, view(ids, route=all_small).logits)
    old = json.loads(save_json(RunConfig()))
    del old["model"]["small_view"]  # a config written before the field existed
    assert from_dict(RunConfig, old).model.small_view is False


def test_the_view_follows_casts_and_copies():
    _, view = pair()
    view = view.to(torch.bfloat16)
    ffn = view.blocks[0].ffn
    assert ffn.small.gate.weight.dtype == torch.bfloat16 and ffn.small.down.weight.dtype == torch.bfloat16
    clone = copy.deepcopy(view)
    assert clone.blocks[0].ffn.small.gate.owner is clone.blocks[0].ffn.big  # the copy's view reads the copy's BIG


def test_a_view_wider_than_big_is_refused():
    with pytest.raises(ValueError, match="small_view"):
        DuoConfig(d_big=16, d_small=32, small_view=True)
    with pytest.raises(ValueError, match="neurons"):
        SmallView(SwiGLU(8, 4), 5)


def test_a_routed_ffn_built_as_a_view():
    ffn = RoutedFFN(16, 4, 64, small_view=True)
    assert [n for n, _ in ffn.named_parameters()] == ["big.gate.weight", "big.up.weight", "big.down.weight"]
    u = torch.randn(2, 5, 16)
    with torch.no_grad():
        want = torch.nn.functional.linear(
            torch.nn.functional.silu(u @ ffn.big.gate.weight[:4].T) * (u @ ffn.big.up.weight[:4].T), ffn.big.down.weight[:, :4]
        )
        assert torch.allclose(ffn(u, torch.tensor(Choice.SMALL, dtype=torch.uint8)), want, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@torch.no_grad()
def test_gpu_kernels_give_the_copy_s_output_for_the_view():
    """bf16 on a GPU: sorted, grouped, masked and (with Triton) fused read the view's strided down columns right."""
    import importlib.util

    from duollm.kernels.triton_ffn import routed_ffn_fused

    torch.manual_seed(0)
    plain = RoutedFFN(256, 64, 1024, kernel="reference").cuda().bfloat16()
    view = copy.deepcopy(plain)
    keep = torch.randperm(1024, device="cuda")[:64].sort().values
    with torch.no_grad():  # plain's SMALL: a copy of the kept neurons; view's: BIG reordered, then viewed
        plain.small.gate.weight.copy_(plain.big.gate.weight[keep])
        plain.small.up.weight.copy_(plain.big.up.weight[keep])
        plain.small.down.weight.copy_(plain.big.down.weight[:, keep])
    keep_first(view.big, keep)
    view.small = SmallView(view.big, 64)
    u = torch.randn(4, 512, 256, device="cuda", dtype=torch.bfloat16)
    choice = torch.randint(0, 3, (4, 512), dtype=torch.uint8, device="cuda")
    small_or_skip = torch.where(choice == Choice.BIG, Choice.SMALL, choice)
    kernels = {**KERNELS, "grouped": routed_ffn_grouped}
    if importlib.util.find_spec("triton") is not None:
        kernels["fused"] = routed_ffn_fused
    for name, kernel in kernels.items():
        want = kernel(u, small_or_skip, plain.small, plain.big).float()
        got = kernel(u, small_or_skip, view.small, view.big).float()
        assert torch.allclose(got, want, atol=1e-2, rtol=1e-2), (name, (got - want).abs().max())
        got, want = kernel(u, choice, view.small, view.big).float(), plain(u, choice).float()
        assert torch.allclose(got, want, atol=2e-2, rtol=2e-2), (name, (got - want).abs().max())


def test_training_only_a_view_small_is_refused_in_one_line(tmp_path):
    from duollm.cli import main

    argv = [
        "train",
        "--preset",
        "debug",
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "1",
        "--model.small_view=true",
        "--train.train_only=small",
    ]
    assert main(argv) == 2 and not (tmp_path / "r").exists()

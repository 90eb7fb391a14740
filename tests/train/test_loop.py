"""Stage-1 training: the loss falls, resume equals an uninterrupted run, DDP equals one process.
Run: pytest tests/train/test_loop.py"""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from duollm import kernels
from duollm.config import apply_overrides
from duollm.errors import DuoError
from duollm.model.transformer import DuoConfig, DuoLM
from duollm.presets import run_config
from duollm.routing.sample import exact_counts, random_route
from duollm.train.loop import read_metrics, train


def debug_cfg(**kw):
    return apply_overrides(run_config("debug"), {"train.log_every": 1, **kw})


def test_training_reduces_the_loss(tmp_path):
    res = train(debug_cfg(**{"train.steps": 30}), tmp_path / "run", progress=False)
    losses = [m["loss"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert res["steps"] == 30 and len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    assert (tmp_path / "run" / "config.json").exists() and (tmp_path / "run" / "ckpt" / "latest.json").exists()


def test_on_step_is_called_after_every_step_and_a_resumed_run_counts_on(tmp_path):
    seen = []
    train(debug_cfg(**{"train.steps": 4, "train.ckpt_every": 2}), tmp_path / "run", progress=False, on_step=seen.append)
    assert seen == [1, 2, 3, 4]
    train(debug_cfg(**{"train.steps": 6, "train.ckpt_every": 2}), tmp_path / "run", resume=True, progress=False, on_step=seen.append)
    assert seen == [1, 2, 3, 4, 5, 6]


def test_resume_ends_with_the_same_loss(tmp_path):
    cfg = debug_cfg(**{"train.steps": 8, "train.ckpt_every": 3, "train.p_skip": 0.2, "train.p_small": 0.3})
    full = train(cfg, tmp_path / "a", progress=False)
    # interrupted after step 4: the checkpoint at 3 is the latest; metrics at 4 were logged and must be dropped
    train(apply_overrides(cfg, {"train.steps": 4}), tmp_path / "b", progress=False)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    assert resumed["final_loss"] == full["final_loss"]
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [m["step"] for m in b] == list(range(1, 9))
    assert [m["loss"] for m in a] == [m["loss"] for m in b]


def test_freeze_big_then_train_small(tmp_path):
    """The paper's ablation: a dense run, then a run that starts from its weights and trains only the small
    modules; everything else stays exactly as the dense run left it, and a resumed second phase matches."""
    from safetensors.torch import load_file

    from duollm.runs import checkpoint

    train(debug_cfg(**{"train.steps": 3, "train.p_big": 1.0, "train.p_small": 0.0}), tmp_path / "dense", progress=False)
    small = debug_cfg(**{"train.steps": 4, "train.init": str(tmp_path / "dense"), "train.train_only": "small", "train.ckpt_every": 2})
    res = train(small, tmp_path / "small", progress=False)
    train(apply_overrides(small, {"train.steps": 2}), tmp_path / "again", progress=False)
    assert train(small, tmp_path / "again", resume=True, progress=False)["final_loss"] == res["final_loss"]

    def weights(run):
        return load_file(checkpoint.latest(run)[1] / "model.safetensors")

    before, after = weights(tmp_path / "dense"), weights(tmp_path / "small")
    assert before.keys() == after.keys()
    for name in before:
        same = torch.equal(before[name], after[name])
        assert same != (".small." in name), name  # only the small modules moved
    with pytest.raises(DuoError, match="no checkpoint"):
        train(debug_cfg(**{"train.init": str(tmp_path / "nothing")}), tmp_path / "x", progress=False)
    with pytest.raises(DuoError, match="train.train_only must be one of"):
        debug_cfg(**{"train.train_only": "medium"})


def test_run_directory_is_protected(tmp_path):
    cfg = debug_cfg(**{"train.steps": 2})
    train(cfg, tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "config.json").read_text()
    with pytest.raises(DuoError, match="already holds a run"):
        train(cfg, tmp_path / "r", progress=False)
    with pytest.raises(DuoError, match="holds a different run"):
        train(apply_overrides(cfg, {"model.d_model": 64}), tmp_path / "r", resume=True, progress=False)
    assert (tmp_path / "r" / "config.json").read_text() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DuoError, match="not a duollm run directory"):
        train(cfg, tmp_path / "other", progress=False)
    with pytest.raises(DuoError, match="nothing to resume"):
        train(cfg, tmp_path / "fresh", resume=True, progress=False)


def test_random_route_probabilities():
    r = random_route((64, 64, 4), 0.5, 0.3, 0.2, torch.Generator().manual_seed(0))
    frac = torch.bincount(r.flatten().long(), minlength=3).float() / r.numel()
    assert torch.allclose(frac, torch.tensor([0.2, 0.3, 0.5]), atol=0.02)
    with pytest.raises(DuoError, match="sum to 1"):
        random_route((1, 1, 1), 0.5, 0.6, 0.0, torch.Generator())


def test_exact_counts_are_exact_per_layer_and_block_with_the_same_odds_per_token():
    g = torch.Generator().manual_seed(0)
    r = random_route((2, 4, 16, 3), 0.5, 0.3, 0.2, g, exact=True)  # two (B, T) blocks of 64 tokens, 3 layers
    want = exact_counts(64, 0.5, 0.3)
    assert want == (32, 19, 13)
    assert exact_counts(5, 0.5, 0.5) == (2, 3, 0) and exact_counts(1, 0.5, 0.5)[2] == 0  # no SKIP when p_skip is 0
    for block in r:
        for l in range(3):
            col = block[..., l].flatten().long()
            assert tuple(torch.bincount(col, minlength=3).flip(0).tolist()) == want  # (BIG, SMALL, SKIP)
    draws = torch.stack([random_route((4, 16, 3), 0.5, 0.3, 0.2, g, exact=True) for _ in range(400)])  # (400, 4, 16, 3)
    big = (draws == 2).float().mean(0)  # each (token, layer): its share of BIG over the draws
    assert (big - 32 / 64).abs().max() < 0.1  # no position favoured: the permutation is uniform
    same = (draws[..., 0] == 2) & (draws[..., 1] == 2)  # two layers' draws are independent
    assert abs(same.float().mean().item() - 0.25) < 0.01


def test_exact_counts_train_the_same_model_compiled_through_the_sorted_path(monkeypatch):
    """The counts handed over let a compiled model run the sorted path at fixed shapes: its loss and gradients equal
    the reference's."""
    calls = []
    sorted_path = kernels.PATHS["sorted"]
    monkeypatch.setitem(kernels.PATHS, "sorted", lambda *a: calls.append(a[-1]) or sorted_path(*a))
    torch.manual_seed(0)
    cfg = DuoConfig(n_layer=2, d_model=32, n_head=4, d_big=64, d_small=16, vocab_size=64, max_seq_len=16)
    ref = DuoLM(cfg)
    fast = DuoLM(cfg)
    fast.load_state_dict(ref.state_dict())
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    route = random_route((2, 8, 2), 0.5, 0.25, 0.25, torch.Generator().manual_seed(2), exact=True)
    counts = (exact_counts(16, 0.5, 0.25),) * 2
    a = ref(ids[:, :-1], route=route, targets=ids[:, 1:])
    a.loss.backward()
    b = torch.compile(fast)(ids[:, :-1], route=route, targets=ids[:, 1:], counts=counts)
    b.loss.backward()
    assert calls == [counts[0]] * 2  # traced once, each layer with its counts
    assert torch.allclose(a.loss, b.loss, atol=1e-5)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
    for bad in (((8, 4, 3),) * 2, ((20, -4, 0),) * 2, (8, 4, 4), ((8.0, 4, 4),) * 2):  # 15 tokens; negative; flat; float
        with pytest.raises(ValueError, match="counts go with a per-token route"):
            ref(ids[:, :-1], route=route, counts=bad)
    with pytest.raises(ValueError, match="counts differ from the route's own"):
        ref(ids[:, :-1], route=route, counts=((4, 8, 4),) * 2)


def test_the_training_forward_with_exact_counts_compiles_without_a_graph_break():
    """A compiled training step with a host-drawn route and its counts is one graph: no host read stops it (a break
    leaves the GPU idle while the host catches up)."""
    cfg = DuoConfig(n_layer=2, d_model=32, n_head=4, d_big=64, d_small=16, vocab_size=64, max_seq_len=16)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    route = random_route((2, 8, 2), 0.5, 0.25, 0.25, torch.Generator().manual_seed(2), exact=True)
    counts = (exact_counts(16, 0.5, 0.25),) * 2
    torch._dynamo.reset()
    info = torch._dynamo.explain(DuoLM(cfg))(ids[:, :-1], route=route, targets=ids[:, 1:], counts=counts)
    assert info.graph_break_count == 0, [str(b.reason) for b in info.break_reasons]


def test_training_with_exact_counts_reduces_the_loss(tmp_path):
    res = train(
        debug_cfg(**{"train.steps": 30, "train.exact_counts": True, "train.p_skip": 0.2, "train.p_small": 0.3}),
        tmp_path / "r",
        progress=False,
    )
    losses = [m["loss"] for m in read_metrics(tmp_path / "r" / "metrics.jsonl")]
    assert res["steps"] == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0


def test_ddp_two_processes_match_one(tmp_path):
    """torchrun with gloo: 2 ranks × 4 sequences take the same steps as 1 process × 8 sequences."""
    common = ["--preset", "debug", "--steps", "4", "--json", "--train.log_every=1", "--train.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    one = subprocess.run(
        [sys.executable, "-m", "duollm", "train", "--out", str(tmp_path / "one"), *common, "--train.batch_size=8"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert one.returncode == 0, one.stderr
    with socket.socket() as sock:  # a free port, so that concurrent runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m", "duollm", "train"]
    two = subprocess.run([*cmd, "--out", str(tmp_path / "two"), *common, "--train.batch_size=4"], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    a = [m["loss"] for m in read_metrics(tmp_path / "one" / "metrics.jsonl")]
    b = [m["loss"] for m in read_metrics(tmp_path / "two" / "metrics.jsonl")]
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, abs=1e-4)
    assert json.loads(two.stdout.strip().splitlines()[-1])["steps"] == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_a_gpu(tmp_path):
    with pytest.raises(DuoError, match="no CUDA GPU"):
        train(debug_cfg(**{"train.device": "cuda"}), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_exact_counts_compiled_on_a_gpu_give_the_reference_s_gradients():
    """bf16 autocast on a GPU: the compiled model on the sorted path at the handed-over counts, against the same
    model eager through the reference dispatch."""
    torch.manual_seed(0)
    cfg = DuoConfig(n_layer=3, d_model=128, n_head=4, d_big=512, d_small=32, vocab_size=256, max_seq_len=128)
    ref = DuoLM(dataclasses.replace(cfg, kernel="reference")).cuda()
    fast = DuoLM(cfg).cuda()
    fast.load_state_dict(ref.state_dict())
    ids = torch.randint(0, 256, (4, 129), device="cuda")
    route = random_route((4, 128, 3), 0.5, 0.3, 0.2, torch.Generator().manual_seed(2), exact=True)
    counts = (exact_counts(512, 0.5, 0.3),) * 3
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a = ref(ids[:, :-1], route=route, targets=ids[:, 1:])
        b = torch.compile(fast)(ids[:, :-1], route=route, targets=ids[:, 1:], counts=counts)
    a.loss.backward(), b.loss.backward()
    assert torch.allclose(a.loss, b.loss, atol=2e-2)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=2e-2, rtol=5e-2), (name, (p.grad - q.grad).abs().max())

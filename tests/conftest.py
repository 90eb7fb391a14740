"""Shared tiny fixtures: 2 layers, d=32, vocab 64, CPU, fixed seed (docs/design.md §7.14). Run: pytest tests/"""

import pytest
import torch

from duollm import DuoConfig, DuoLM


@pytest.fixture
def cfg() -> DuoConfig:
    return DuoConfig(n_layer=2, n_head=4, n_kv_head=4, d_model=32, d_big=128, d_small=8, vocab_size=64, max_seq_len=32)


@pytest.fixture
def model(cfg) -> DuoLM:
    torch.manual_seed(0)
    return DuoLM(cfg).eval()


@pytest.fixture
def ids(cfg) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (3, 16), generator=torch.Generator().manual_seed(1))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`duollm ARGV` in this process: (exit code, stdout, stderr)."""
    from duollm.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def train_debug_run(out, n_layer: int):
    """A run directory trained for 3 steps of the `debug` preset with `n_layer` layers (seconds)."""
    from duollm.cli import main

    assert main(["train", "--out", str(out), "--preset", "debug", "--steps", "3", f"--model.n_layer={n_layer}", "--json"]) == 0
    return out


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    """A 3-layer debug run, one per test module."""
    return train_debug_run(tmp_path_factory.mktemp("debug") / "run", 3)

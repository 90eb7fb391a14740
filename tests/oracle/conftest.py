"""Fixtures of the oracle tests."""

import pytest
import torch

from duollm import DuoConfig, DuoLM


@pytest.fixture
def deep():
    """A 4-layer random Duo model and two sequences of 10 tokens: every route set is small enough for brute force."""
    torch.manual_seed(0)
    m = DuoLM(DuoConfig(n_layer=4, n_head=2, n_kv_head=2, d_model=16, d_big=64, d_small=4, vocab_size=32, max_seq_len=16)).eval()
    ids = torch.randint(0, 32, (2, 10), generator=torch.Generator().manual_seed(2))
    return m, ids

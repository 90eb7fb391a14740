"""Named configurations: Python functions returning a RunConfig; a variant copies and edits another.

- `debug`: the test model (2 layers, d=32, byte tokens, synthetic text); trains in seconds.
- `tiny`: the CPU demo model (4 layers, d=128); trains in about three minutes on two cores.
- `small`: a larger CPU/GPU model for quick studies (8 layers, d=256).
- `gpt2-124m`: 12 layers, d=768, big 3072, small 192 (= big/16), GPT-2-small sized.
- `paper-1.4b`: the Duo-LLM paper's model: 12 layers, d=2560, big 10240, small 640, vocab 32000, tied:
  1.399B parameters (arXiv:2410.10846 §3.1; docs/design.md, "The method").
- `study-124m`: gpt2-124m's shape on the built corpus (`duollm data build`) with its 16k BPE: the GPU study.
- `arena`: the arena's backbone on one GPU (docs/arena.md): study-124m's family, 8 layers, d=512, on the same corpus.
- `arena-toy`: the arena on a CPU: 4 layers, d=64, on the built-in books; seconds per entrant.
`model_config(name)` returns just the DuoConfig (docs/design.md §4).
"""

from __future__ import annotations

import dataclasses

from duollm.config import RunConfig, TrainConfig
from duollm.data import sources
from duollm.data.corpus import DataConfig
from duollm.errors import DuoError
from duollm.model.transformer import DuoConfig


def debug() -> RunConfig:
    """The test model (DuoConfig defaults: 2 layers, d=32) on synthetic text, byte tokens: seconds on a CPU."""
    model = DuoConfig(vocab_size=257)
    data = DataConfig(train="synthetic", val="synthetic-val", tokenizer="bytes")
    return RunConfig(preset="debug", model=model, data=data, train=TrainConfig(steps=20, batch_size=8, seq_len=64, log_every=5))


def tiny() -> RunConfig:
    model = DuoConfig(n_layer=4, n_head=4, n_kv_head=4, d_model=128, d_big=512, d_small=32, vocab_size=4096, max_seq_len=128)
    train = TrainConfig(steps=600, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=30, log_every=25)
    return RunConfig(preset="tiny", model=model, data=DataConfig(), train=train)


def small() -> RunConfig:
    model = DuoConfig(n_layer=8, n_head=8, n_kv_head=8, d_model=256, d_big=1024, d_small=64, vocab_size=4096, max_seq_len=256)
    train = TrainConfig(steps=2000, batch_size=32, seq_len=256, lr=2e-3, warmup_steps=100, log_every=50)
    return RunConfig(preset="small", model=model, data=DataConfig(train="mix"), train=train)


def gpt2_124m() -> RunConfig:
    model = DuoConfig(n_layer=12, n_head=12, n_kv_head=12, d_model=768, d_big=3072, d_small=192, vocab_size=50304, max_seq_len=1024)
    train = TrainConfig(steps=5000, batch_size=32, seq_len=1024, lr=6e-4, warmup_steps=200, log_every=20)
    return RunConfig(preset="gpt2-124m", model=model, data=DataConfig(train="mix"), train=train)


def paper_1_4b() -> RunConfig:
    model = DuoConfig(n_layer=12, n_head=20, n_kv_head=20, d_model=2560, d_big=10240, d_small=640, vocab_size=32000, max_seq_len=2048)
    train = TrainConfig(steps=10000, batch_size=8, grad_accum=8, seq_len=2048, lr=3e-4, warmup_steps=500, log_every=10)
    return RunConfig(preset="paper-1.4b", model=model, data=DataConfig(train="mix"), train=train)


def study_124m() -> RunConfig:
    """The GPU study's model (scripts/study.sh): gpt2-124m's shape (small = big/16) on the corpus of
    `duollm data build` (default folder `.cache/corpus`, its 16k BPE), compiled. 4000 steps of 32 × 1024 tokens
    (131M tokens) take about six minutes on one H200 at the random-routing rate of docs/benchmarks.md."""
    corpus = sources.cache_dir() / "corpus"
    model = DuoConfig(n_layer=12, n_head=12, n_kv_head=12, d_model=768, d_big=3072, d_small=192, vocab_size=16384, max_seq_len=1024)
    data = DataConfig(train=str(corpus), val=str(corpus / "prose-val.jsonl"), tokenizer=str(corpus / "tokenizer.json"))
    train = TrainConfig(steps=4000, batch_size=32, seq_len=1024, lr=1e-3, warmup_steps=200, log_every=50, compile=True)
    return RunConfig(preset="study-124m", model=model, data=data, train=train)


def arena() -> RunConfig:
    """The arena's backbone (docs/arena.md, `duollm arena --preset arena`): study-124m's family (Llama-style, small =
    big/16, its corpus and 16k BPE) at 8 layers, d=512, 8 heads, big 2048, small 128. The dense entrant has 42.0M
    parameters: 33.6M in the blocks (25.2M of them in the FFNs) and 8.4M in the tied embedding. 1200 steps of
    32 x 1024 tokens: 39.3M training tokens per entrant, 48 to 86 seconds of training each on one H200
    (scripts/arena_rate.py: 460k to 820k tokens/s, docs/arena.md), so that a round of a dozen entrants and a second
    seed of the leaders fits in 30 minutes of one H200. Not compiled: the entrants' routing has data-dependent
    shapes."""
    base = study_124m()
    model = dataclasses.replace(base.model, n_layer=8, n_head=8, n_kv_head=8, d_model=512, d_big=2048, d_small=128)
    train = dataclasses.replace(base.train, steps=1200, warmup_steps=100, lr=1.5e-3, compile=False)
    return RunConfig(preset="arena", model=model, data=base.data, train=train)


def arena_toy() -> RunConfig:
    """The arena on a CPU (the demo's arena stage, tests): 4 layers, d=64, 4 heads, big 256, small 16, the built-in
    tokenizer (4096) and books; 200 steps of 8 x 64 tokens (102,400 tokens per entrant); the dense entrant has 0.52M
    parameters (0.26M of them the tied embedding)."""
    model = DuoConfig(n_layer=4, n_head=4, n_kv_head=4, d_model=64, d_big=256, d_small=16, vocab_size=4096, max_seq_len=64)
    train = TrainConfig(steps=200, batch_size=8, seq_len=64, lr=3e-3, warmup_steps=20, log_every=20)
    return RunConfig(preset="arena-toy", model=model, data=DataConfig(), train=train)


PRESETS = {
    **{"debug": debug, "tiny": tiny, "small": small, "gpt2-124m": gpt2_124m, "paper-1.4b": paper_1_4b, "study-124m": study_124m},
    **{"arena": arena, "arena-toy": arena_toy},
}


def run_config(name: str) -> RunConfig:
    """The RunConfig of a preset; unknown names raise DuoError listing the known ones."""
    if name not in PRESETS:
        raise DuoError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def model_config(name: str) -> DuoConfig:
    """The DuoConfig of a preset (docs/design.md §4)."""
    return dataclasses.replace(run_config(name).model)

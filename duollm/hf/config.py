"""`DuoLMConfig`: a `DuoConfig` as a transformers config (model type `duollm`), plus the routing policy.

The fields are DuoConfig's, under the same names (`n_layer`, `d_big`, ...); `attribute_map` gives them the
names transformers reads (`num_hidden_layers`, `hidden_size`, ...), so generic code (the KV cache, pipelines)
finds them. Two fields are ours:

- `policy`: how tokens are routed when a call does not say: `all-big`, `all-small`, `random:P`, a route
  string of `B`/`S`/`-`, or `router:NAME` (a router saved in the folder's `routers/NAME/`);
- `seed`: the seed of the random draws of `random:` policies (every call starts from it again).

`duollm_run` keeps the run's whole `config.json` (data, training) and `duollm_step` the training step of the
weights, so that `duollm import` can restore the run; models made in Python leave them empty. The config is a dataclass in transformers 5's style: fields with
defaults and a `__post_init__`, so `DuoLMConfig(n_layer=4)` and `from_pretrained(dir, n_layer=...)` work.
"""

from __future__ import annotations

import dataclasses

from transformers import PretrainedConfig

from duollm.model.transformer import DuoConfig


class DuoLMConfig(PretrainedConfig):
    """A Duo model's sizes and default routing policy, saved as `config.json` of a Hugging Face folder."""

    model_type = "duollm"
    attribute_map = {
        "num_hidden_layers": "n_layer",
        "hidden_size": "d_model",
        "num_attention_heads": "n_head",
        "num_key_value_heads": "n_kv_head",
        "max_position_embeddings": "max_seq_len",
    }

    # DuoConfig's fields (model/transformer.py), same names, defaults read from it; a test checks that none is missing
    n_layer: int = DuoConfig.n_layer
    n_head: int = DuoConfig.n_head
    n_kv_head: int = DuoConfig.n_kv_head
    d_model: int = DuoConfig.d_model
    d_big: int = DuoConfig.d_big
    d_small: int = DuoConfig.d_small
    vocab_size: int = DuoConfig.vocab_size
    max_seq_len: int = DuoConfig.max_seq_len
    rope_theta: float = DuoConfig.rope_theta
    norm_eps: float = DuoConfig.norm_eps
    tie_embeddings: bool = DuoConfig.tie_embeddings
    init_std: float = DuoConfig.init_std
    kernel: str = DuoConfig.kernel
    small_view: bool = DuoConfig.small_view  # SMALL reads BIG's first d_small neurons: no SMALL tensors in the file
    # routing and provenance
    policy: str = "all-big"
    seed: int = 0
    duollm_run: dict | None = None
    duollm_step: int = 0
    # transformers' own, with our values; tie_word_embeddings is transformers' name for tie_embeddings and follows it
    # (tied: the output head is the input embedding, one tensor in the file; untied: `model.lm_head.weight` too)
    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        self.duo_config()  # DuoConfig checks the sizes (heads divide the width, even head size)
        self.tie_word_embeddings = self.tie_embeddings
        super().__post_init__(**kwargs)

    def duo_config(self) -> DuoConfig:
        """The DuoConfig these fields describe."""
        return DuoConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DuoConfig)})

    @classmethod
    def from_duo(cls, duo: DuoConfig, **kwargs) -> DuoLMConfig:
        """A DuoLMConfig with `duo`'s sizes; `kwargs` set the other fields (policy, eos_token_id, ...)."""
        return cls(**dataclasses.asdict(duo), **kwargs)

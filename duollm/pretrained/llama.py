"""A Llama model (transformers' `LlamaForCausalLM`, or a folder of one) as a Duo model.

Everything a Llama model computes a Duo model can hold: pre-norm RMSNorm, plain RoPE in the same (halves)
layout, grouped-query attention without biases, SwiGLU FFNs without biases, a tied or untied output head. So
`from_llama` copies the embedding, attention, norms and head exactly and makes each layer's BIG module the
pretrained FFN, exactly: the all-BIG route computes the Llama model's logits. Each SMALL module is made from
its BIG one (`small="slice"`: slice.py). A Llama model with anything else (a bias, scaled RoPE, another
activation, wider heads, another model type) is refused with a DuoError naming the feature, before any weight
is read.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import Tensor

from duollm.errors import DuoError
from duollm.model.transformer import DuoConfig, DuoLM
from duollm.pretrained.slice import slice_small

SMALL = ("slice",)  # how SMALL modules can be made from BIG ones

# Duo parameter name → transformers' Llama name: the model's own, then each layer's (under `blocks.l.` and
# `model.layers.l.`); SMALL modules have no Llama counterpart
TOP = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
HEAD = {"lm_head.weight": "lm_head.weight"}  # untied models only
LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q.weight": "self_attn.q_proj.weight",
    "attn.k.weight": "self_attn.k_proj.weight",
    "attn.v.weight": "self_attn.v_proj.weight",
    "attn.o.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn.big.gate.weight": "mlp.gate_proj.weight",
    "ffn.big.up.weight": "mlp.up_proj.weight",
    "ffn.big.down.weight": "mlp.down_proj.weight",
}


def from_llama(
    model_or_path, *, d_small: int, small: str = "slice", calib: Tensor | None = None, max_seq_len: int = 2048, small_view: bool = False
) -> DuoLM:
    """A Duo model (fp32, on the CPU) from a transformers `LlamaForCausalLM` or the path of a Llama folder
    (config.json and safetensors): embeddings, attention, norms, head and BIG modules copied exactly, SMALL
    modules of width `d_small` made by `small` ("slice": the BIG neurons with the highest `slice_scores`, from
    the weights alone or, given `calib` (B, T) token ids, from what they do on that text). `small_view`: SMALL
    is stored as a view of BIG's first `d_small` neurons, BIG's neurons reordered so the kept ones come first
    (slice.py; no SMALL parameters, `cfg.small_view`). RoPE tables are built for min(max_position_embeddings,
    `max_seq_len`) positions. DuoError for what a Duo model cannot hold."""
    from transformers import AutoConfig, LlamaForCausalLM, PreTrainedModel  # optional dependency: the `pretrained` extra

    if small not in SMALL:
        raise DuoError(f"small={small!r} is not supported (have: {', '.join(SMALL)})")
    if isinstance(model_or_path, str | os.PathLike):
        folder = Path(model_or_path)
        if not (folder / "config.json").is_file():
            raise DuoError(f"{folder} is not a model folder (no config.json)")
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            raise DuoError(f"{folder}/config.json cannot be read ({str(e).splitlines()[0]})") from None
        cfg = duo_config(config, d_small, max_seq_len)  # refuse before reading the weights
        llama = LlamaForCausalLM.from_pretrained(folder, config=config, local_files_only=True, dtype="auto")
    else:
        llama = model_or_path
        if not isinstance(llama, PreTrainedModel):
            raise DuoError(f"from_llama takes a LlamaForCausalLM or a folder path, not {type(llama).__name__}")
        cfg = duo_config(llama.config, d_small, max_seq_len)
    if not isinstance(llama, LlamaForCausalLM):
        raise DuoError(f"from_llama needs a LlamaForCausalLM (with its output head), not {type(llama).__name__}")
    duo = DuoLM(dataclasses.replace(cfg, small_view=small_view))  # a view: no SMALL weights are ever made
    copy_weights(duo, llama.state_dict())
    slice_small(duo, calib, view=small_view)
    return duo


def duo_config(config, d_small: int, max_seq_len: int) -> DuoConfig:
    """The DuoConfig of a transformers Llama config; DuoError naming the first feature a Duo model cannot represent."""
    if config.model_type != "llama":
        raise DuoError(f"model_type {config.model_type!r} is not supported: from_llama reads Llama models only")
    if config.hidden_act not in ("silu", "swish"):
        raise DuoError(f"hidden_act {config.hidden_act!r} is not supported: Duo FFNs are SwiGLU (silu)")
    if getattr(config, "attention_bias", False):
        raise DuoError("attention_bias is not supported: Duo attention has no biases")
    if getattr(config, "mlp_bias", False):
        raise DuoError("mlp_bias is not supported: Duo FFNs have no biases")
    width = config.hidden_size // config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or width
    if head_dim != width or width * config.num_attention_heads != config.hidden_size:
        raise DuoError(f"head_dim {head_dim} is not supported: Duo heads are hidden_size/num_attention_heads ({width}) wide")
    theta = rope_theta(config)
    if not 1 <= d_small < config.intermediate_size:
        raise DuoError(f"d_small must be in 1..{config.intermediate_size - 1} (below intermediate_size), got {d_small}")
    if max_seq_len < 1:
        raise DuoError(f"max_seq_len must be >= 1, got {max_seq_len}")
    try:
        return DuoConfig(
            n_layer=config.num_hidden_layers,
            n_head=config.num_attention_heads,
            n_kv_head=config.num_key_value_heads or config.num_attention_heads,
            d_model=config.hidden_size,
            d_big=config.intermediate_size,
            d_small=d_small,
            vocab_size=config.vocab_size,
            max_seq_len=min(config.max_position_embeddings, max_seq_len),
            rope_theta=theta,
            norm_eps=config.rms_norm_eps,
            tie_embeddings=bool(config.tie_word_embeddings),
        )
    except ValueError as e:  # DuoConfig's own checks (an odd head size, heads that do not divide)
        raise DuoError(f"this Llama model does not fit a Duo model ({e})") from None


def rope_theta(config) -> float:
    """RoPE's base, from `rope_parameters` (transformers 5) or `rope_theta` (earlier); DuoError for scaled RoPE."""
    rope = dict(getattr(config, "rope_parameters", None) or {})  # transformers 5: type and base in one dict
    rope.update(getattr(config, "rope_scaling", None) or {})  # earlier: the scaling alone, None when plain
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise DuoError(f"rope_scaling {kind!r} is not supported: Duo models use plain RoPE")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise DuoError("partial_rotary_factor is not supported: Duo models rotate whole heads")
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def weight_names(cfg: DuoConfig) -> dict[str, str]:
    """Each Duo parameter taken from the Llama model (all but the SMALL modules) → its transformers name."""
    names = dict(TOP) if cfg.tie_embeddings else {**TOP, **HEAD}
    for l in range(cfg.n_layer):
        names.update({f"blocks.{l}.{duo}": f"model.layers.{l}.{hf}" for duo, hf in LAYER.items()})
    return names


@torch.no_grad()
def copy_weights(duo: DuoLM, weights: dict[str, Tensor]) -> None:
    """Copy a Llama state dict `weights` (transformers' names) into `duo`, exactly (cast to `duo`'s dtype);
    DuoError for a tensor it has no place for, a missing or misshapen one, or a tied head that is not the embedding."""
    names = weight_names(duo.cfg)
    if duo.cfg.tie_embeddings and "lm_head.weight" in weights:  # transformers lists a tied head under both names
        if not torch.equal(weights["lm_head.weight"], weights["model.embed_tokens.weight"]):
            raise DuoError("tie_word_embeddings is set but lm_head.weight differs from embed_tokens.weight")
        weights = {k: v for k, v in weights.items() if k != "lm_head.weight"}
    extra = sorted(set(weights) - set(names.values()))
    if extra:
        raise DuoError(f"{extra[0]} is not supported: a Duo model has no place for it ({len(extra)} such tensors)")
    for duo_name, hf_name in names.items():
        p = duo.get_parameter(duo_name)
        if hf_name not in weights:
            raise DuoError(f"the Llama model has no {hf_name}")
        if weights[hf_name].shape != p.shape:
            raise DuoError(f"{hf_name} is {tuple(weights[hf_name].shape)}, the Duo model needs {tuple(p.shape)}")
        p.copy_(weights[hf_name])

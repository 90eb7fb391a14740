"""What the benchmarks share: the one way they time work (wall clock around a call, the GPU drained before and
after), and the dense transformers model they compare against."""

import time

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    """(seconds, result) of one call of fn()."""
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def hf_llama(cfg, dtype):
    """transformers' `LlamaForCausalLM` with the dimensions of a DuoConfig at all-big (FFN width d_big, tied
    head, SDPA), random weights, on DEVICE: the dense model a user would otherwise run."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_big,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head,
        max_position_embeddings=cfg.max_seq_len,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(hf_cfg).to(DEVICE, dtype).eval()

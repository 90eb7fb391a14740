"""Duo models from Llama models (duollm.pretrained): all-BIG logits equal transformers' own (fp32, random weights,
grouped-query and full attention, two RoPE bases, tied and untied heads), from an instance or a folder; every
feature a Duo model cannot hold is refused by name; a sliced SMALL module is a sub-network of its BIG one.
CPU, small random models, no downloads. Run: pytest tests/pretrained/test_llama.py"""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM  # noqa: E402

from duollm import Choice  # noqa: E402
from duollm.errors import DuoError  # noqa: E402
from duollm.model.ffn import SwiGLU  # noqa: E402
from duollm.pretrained import calib_scores, from_llama, slice_scores  # noqa: E402
from duollm.pretrained.slice import top_neurons  # noqa: E402

VOCAB, HIDDEN, INNER, LAYERS = 101, 64, 160, 3


def llama(tied: bool = True, n_kv: int = 2, theta: float = 10000.0, **config) -> LlamaForCausalLM:
    """A 3-layer Llama with random weights far from their init (norm gains in 0.5..1.5, matrices std 0.15), so
    that every copied tensor moves the logits."""
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INNER,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=n_kv,
        max_position_embeddings=64,
        rope_theta=theta,
        tie_word_embeddings=tied,
        **config,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.5, 1.5) if p.dim() == 1 else p.normal_(0.0, 0.15)
    return model


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 48), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def max_diff(duo, model, ids) -> float:
    want = model(ids).logits  # (B, T, V)
    assert want.std() > 0.5  # the logits are not all near zero
    return (duo(ids).logits - want).abs().max().item()


CASES = {
    "gqa-tied": dict(tied=True, n_kv=2, theta=10000.0),
    "mha-untied-theta500k": dict(tied=False, n_kv=4, theta=500000.0),
    "mqa-untied": dict(tied=False, n_kv=1, theta=10000.0),
    "gqa-tied-theta500k": dict(tied=True, n_kv=2, theta=500000.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_all_big_logits_equal_transformers(case, ids):
    model = llama(**CASES[case])
    duo = from_llama(model, d_small=16)
    c = duo.cfg
    assert (c.n_layer, c.n_head, c.n_kv_head, c.d_model, c.d_big, c.d_small) == (LAYERS, 4, CASES[case]["n_kv"], HIDDEN, INNER, 16)
    assert (c.vocab_size, c.rope_theta, c.tie_embeddings, c.max_seq_len) == (VOCAB, CASES[case]["theta"], CASES[case]["tied"], 64)
    assert (duo.lm_head is None) == CASES[case]["tied"]
    assert max_diff(duo, model, ids) <= 1e-4


def test_a_folder_gives_the_same_model_and_max_seq_len_is_capped(tmp_path, ids):
    model = llama(tied=False, theta=500000.0)
    model.config.max_position_embeddings = 4096
    model.save_pretrained(tmp_path)
    duo = from_llama(tmp_path, d_small=16)
    assert duo.cfg.max_seq_len == 2048 and from_llama(str(tmp_path), d_small=16, max_seq_len=48).cfg.max_seq_len == 48
    assert max_diff(duo, model, ids) <= 1e-4


def test_an_untied_model_survives_the_hugging_face_export(tmp_path, ids):
    from safetensors import safe_open

    from duollm.hf.config import DuoLMConfig
    from duollm.hf.modeling import DuoForCausalLM

    model = llama(tied=False)
    duo = from_llama(model, d_small=16).eval()
    hf = DuoForCausalLM(DuoLMConfig.from_duo(duo.cfg))
    hf.model.load_state_dict(duo.state_dict())
    assert hf.config.tie_word_embeddings is False and hf.get_output_embeddings() is hf.model.lm_head
    hf.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert {"model.embed.weight", "model.lm_head.weight"} <= set(f.keys())
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.model.cfg.tie_embeddings is False
    assert torch.equal(loaded(ids).logits, duo(ids).logits)
    assert max_diff(loaded.model, model, ids) <= 1e-4


def untie(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """A model whose config says tied but whose head was replaced by another matrix."""
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 1.0)
    return model


def mistral() -> MistralForCausalLM:
    cfg = MistralConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INNER, num_hidden_layers=2, num_attention_heads=4)
    return MistralForCausalLM(cfg)


REFUSED = {  # what is refused → (how to make it, what the message names)
    "d_small zero": (lambda: from_llama(llama(), d_small=0), "d_small"),
    "d_small full width": (lambda: from_llama(llama(), d_small=INNER), "d_small"),
    "attention bias": (lambda: from_llama(llama(attention_bias=True), d_small=8), "attention_bias"),
    "mlp bias": (lambda: from_llama(llama(mlp_bias=True), d_small=8), "mlp_bias"),
    "rope scaling": (lambda: from_llama(llama(rope_parameters={"rope_type": "linear", "factor": 2.0}), d_small=8), "rope_scaling 'linear'"),
    "llama3 rope": (
        lambda: from_llama(
            llama(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}), d_small=8
        ),
        "rope_scaling 'llama3'",
    ),
    "gelu": (lambda: from_llama(llama(hidden_act="gelu"), d_small=8), "hidden_act 'gelu'"),
    "wide heads": (lambda: from_llama(llama(head_dim=32), d_small=8), "head_dim 32"),
    "mistral": (lambda: from_llama(mistral(), d_small=8), "model_type 'mistral'"),
    "tie mismatch": (lambda: from_llama(untie(llama(tied=True)), d_small=8), "tie_word_embeddings"),
    "another small": (lambda: from_llama(llama(), d_small=8, small="distill"), "small='distill'"),
    "not a model": (lambda: from_llama(torch.nn.Linear(2, 2), d_small=8), "LlamaForCausalLM"),
    "bad calib": (lambda: from_llama(llama(), d_small=8, calib=torch.rand(2, 5)), "calib"),
    "long calib": (lambda: from_llama(llama(), d_small=8, calib=torch.zeros(1, 65, dtype=torch.long)), "calib"),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_what_a_duo_model_cannot_hold_is_refused_by_name(what):
    make, named = REFUSED[what]
    with pytest.raises(DuoError, match=named) as e:
        make()
    assert "\n" not in str(e.value)


def test_a_folder_is_refused_before_its_weights_are_read(tmp_path):
    with pytest.raises(DuoError, match="no config.json"):
        from_llama(tmp_path, d_small=8)
    llama(attention_bias=True).config.save_pretrained(tmp_path)  # a config, and no weights at all
    with pytest.raises(DuoError, match="attention_bias"):
        from_llama(tmp_path, d_small=8)


def zeroed_outside(big: SwiGLU, keep: torch.Tensor) -> SwiGLU:
    """A copy of `big` whose down columns outside `keep` are zero: the big module restricted to `keep`."""
    out = SwiGLU(big.down.out_features, big.down.in_features)
    out.load_state_dict(big.state_dict())
    drop = torch.ones(big.down.in_features, dtype=torch.bool)
    drop[keep] = False
    with torch.no_grad():
        out.down.weight[:, drop] = 0.0
    return out


@pytest.mark.parametrize("calibrated", [False, True])
def test_sliced_small_is_the_big_module_on_its_top_neurons(calibrated, ids):
    model = llama(tied=False)
    duo = from_llama(model, d_small=24, calib=ids if calibrated else None)
    scores = calib_scores(duo, ids) if calibrated else [slice_scores(b.ffn.big) for b in duo.blocks]
    u = torch.randn(50, HIDDEN)
    with torch.no_grad():
        for block, s in zip(duo.blocks, scores, strict=True):
            keep = top_neurons(s, 24)
            assert keep.shape == (24,) and bool((keep.diff() > 0).all())
            rest = torch.ones_like(s, dtype=torch.bool)
            rest[keep] = False
            assert s[keep].min() >= s[rest].max()  # the kept neurons outscore every other one
            small, big = block.ffn.small, block.ffn.big
            assert torch.equal(small.gate.weight, big.gate.weight[keep]) and torch.equal(small.down.weight, big.down.weight[:, keep])
            assert torch.allclose(small(u), zeroed_outside(big, keep)(u), atol=1e-6)
    all_small = torch.full((LAYERS,), Choice.SMALL, dtype=torch.uint8)
    assert torch.isfinite(duo(ids, route=all_small).logits).all()


def test_weight_only_scores_are_the_norm_product():
    big = SwiGLU(8, 12)
    want = torch.stack([big.down.weight[:, j].norm() * big.gate.weight[j].norm() * big.up.weight[j].norm() for j in range(12)])
    assert torch.allclose(slice_scores(big), want)


@torch.no_grad()
def test_calibration_scores_read_each_layers_ffn_input(ids):
    """The calibrated score of neuron j: mean |silu(gate_j(x)) · up_j(x)| · ||W_down[:, j]|| over every token's
    FFN input x, here taken from the transformers model itself (the input of each layer's mlp)."""
    model = llama()
    duo = from_llama(model, d_small=8)
    inputs = {}  # layer → its mlp's input (B, T, C); the hook returns None, so the output stays the mlp's
    hooks = [
        layer.mlp.register_forward_hook(lambda m, a, o, l=l: inputs.__setitem__(l, a[0])) for l, layer in enumerate(model.model.layers)
    ]
    model(ids)
    for h in hooks:
        h.remove()
    got = calib_scores(duo, ids)
    for l, layer in enumerate(model.model.layers):
        x, mlp = inputs[l].flatten(0, 1), layer.mlp  # (N, C)
        want = (F.silu(mlp.gate_proj(x)) * mlp.up_proj(x)).abs().mean(0) * mlp.down_proj.weight.norm(dim=0)
        assert torch.allclose(got[l], want, rtol=1e-5, atol=1e-6)


def test_importing_the_package_does_not_import_transformers():
    code = "import sys, duollm.pretrained; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

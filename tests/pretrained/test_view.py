"""`duollm import --small slice --small-view` and `from_llama(..., small_view=True)`: SMALL stored as a view of BIG's
first neurons. The run holds no SMALL tensor and fewer parameters, computes the Llama model's all-BIG logits and the
plain slice's all-SMALL ones, and goes through eval, generate, and export to a Hugging Face folder and back.
CPU, small random models. Run: pytest tests/pretrained/test_view.py"""

import json

import pytest
import torch

pytest.importorskip("transformers")

from safetensors import safe_open  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from duollm.model.ffn import SmallView  # noqa: E402
from duollm.pretrained import from_llama  # noqa: E402
from duollm.routing.route import Choice  # noqa: E402
from duollm.runs.load import load_run  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.pretrained.test_job import FAST, VOCAB, save_llama  # noqa: E402
from tests.pretrained.test_llama import HIDDEN, LAYERS, llama  # noqa: E402
from tests.pretrained.test_llama import VOCAB as LLAMA_VOCAB  # noqa: E402


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("calibrated", [False, True])
@torch.no_grad()
def test_from_llama_view_is_the_slice_without_small_weights(calibrated):
    model = llama(tied=False)
    ids = torch.randint(0, LLAMA_VOCAB, (2, 48), generator=torch.Generator().manual_seed(1))
    plain = from_llama(model, d_small=24, calib=ids if calibrated else None).eval()
    view = from_llama(model, d_small=24, calib=ids if calibrated else None, small_view=True).eval()
    assert view.cfg.small_view and isinstance(view.blocks[0].ffn.small, SmallView)
    assert n_params(plain) - n_params(view) == LAYERS * 3 * HIDDEN * 24
    for a, b in zip(plain.blocks, view.blocks, strict=True):  # the same neurons, in the same order
        assert torch.equal(a.ffn.small.gate.weight, b.ffn.small.gate.weight) and torch.equal(
            a.ffn.small.down.weight, b.ffn.small.down.weight
        )
    all_small = torch.full((LAYERS,), Choice.SMALL, dtype=torch.uint8)
    assert torch.equal(view(ids, route=all_small).logits, plain(ids, route=all_small).logits)
    assert (view(ids).logits - model(ids).logits).abs().max().item() <= 1e-4  # all-BIG: still the Llama model


def test_import_view_run_eval_generate_and_export(tmp_path, capsys):
    model = save_llama(tmp_path / "llama")
    llama_dir, plain_run, view_run = str(tmp_path / "llama"), tmp_path / "plain", tmp_path / "view"
    code, out, err = run_cli(capsys, "import", "--hf", llama_dir, "--out", str(plain_run), *FAST)
    assert code == 0, err
    code, out, err = run_cli(capsys, "import", "--hf", llama_dir, "--out", str(view_run), *FAST, "--small-view")
    assert code == 0, err
    res = json.loads(out)
    assert res["small_view"] and res["params"] == json.loads((plain_run / "pretrained.json").read_text())["params"] - 2 * 3 * 32 * 24
    assert res["small_error"] == json.loads((plain_run / "pretrained.json").read_text())["small_error"]  # the same SMALL
    with safe_open(str(next((view_run / "ckpt").glob("step-*")) / "model.safetensors"), "pt") as f:
        assert not any(".small." in k for k in f.keys())
    cfg, duo, _ = load_run(view_run)
    _, plain, _ = load_run(plain_run)
    assert cfg.model.small_view
    ids = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(3))
    all_small = torch.full((2,), Choice.SMALL, dtype=torch.uint8)
    with torch.no_grad():
        assert (duo(ids).logits - model(ids).logits).abs().max().item() <= 1e-4
        assert torch.equal(duo(ids, route=all_small).logits, plain(ids, route=all_small).logits)
    evals = {}
    for name, run in (("plain", plain_run), ("view", view_run)):
        code, out, err = run_cli(
            capsys, "eval", "--run", str(run), "--policy", "all-small", "--split", "prose-val", "--max-tokens", "256", "--json"
        )
        assert code == 0, err
        evals[name] = json.loads(out)
    assert evals["view"]["ppl"] == evals["plain"]["ppl"]
    code, out, err = run_cli(capsys, "generate", "--run", str(view_run), "--prompt", "The", "--max-new-tokens", "4", "--json")
    assert code == 0, err
    # export: the Hugging Face folder keeps the view (config small_view, BIG's tensors only) and loads back
    hf = tmp_path / "hf"
    code, out, err = run_cli(capsys, "export", "--run", str(view_run), "--hf", str(hf), "--json")
    assert code == 0, err
    assert json.loads((hf / "config.json").read_text())["small_view"] is True
    with safe_open(str(hf / "model.safetensors"), "pt") as f:
        assert not any(".small." in k for k in f.keys())
    loaded = AutoModelForCausalLM.from_pretrained(hf).eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids, policy="all-small").logits, duo(ids, route=all_small).logits)
        assert torch.equal(loaded(ids, policy="all-big").logits, duo(ids).logits)
    code, out, err = run_cli(capsys, "import", "--hf", str(hf), "--out", str(tmp_path / "back"), "--json")
    assert code == 0, err
    cfg2, back, _ = load_run(tmp_path / "back")
    assert cfg2.model.small_view and n_params(back) == n_params(duo)

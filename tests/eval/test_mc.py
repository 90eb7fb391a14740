"""The multiple-choice scorer (`duollm mc`) and the lm-eval adapter: known answers under a model whose logits
are forced, padding that changes nothing, the command's JSON and its errors. Run: pytest tests/eval/test_mc.py"""

import importlib
import json
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from duollm import DuoConfig
from duollm.data.tokenizer import ByteTokenizer
from duollm.eval.mc import accuracy, encode_pair, read_questions, score_continuations, score_questions
from duollm.eval.policy import parse_policy
from tests.conftest import run_cli


class ChainModel(torch.nn.Module):
    """A stub LM with forced logits: after byte b it gives logit 3 to byte b+1 and 0 to every other token (a
    chain a → b → c ...), so each choice's score is known without a trained model."""

    def __init__(self):
        super().__init__()
        self.cfg = DuoConfig(vocab_size=257, max_seq_len=32)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.table = torch.zeros(257, 257)
        self.table[torch.arange(256), torch.arange(1, 257)] = 3.0
        self.routes = []

    def forward(self, x, route=None, router=None):
        self.routes.append(route)
        return SimpleNamespace(logits=self.table[x])  # (B, T, V): depends on the current token only


QUESTIONS = [  # (context, choices, label): what acc and acc_norm pick, from the chain
    {"context": "ab", "choices": ["c", "q"], "label": 0},  # both right
    {"context": "ab", "choices": ["q", "cdefghij"], "label": 1},  # acc picks the short one; per character, the chain wins
    {"context": "wx", "choices": ["q", "y"], "label": 1},  # both right
    {"context": "ab", "choices": ["c", "d"], "label": 1},  # a wrong label: both miss
]


@pytest.fixture
def mc_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n")
    return path


def test_known_answers_under_forced_logits(mc_file):
    model, tok = ChainModel(), ByteTokenizer()
    rows = score_questions(model, tok, read_questions(mc_file), parse_policy("BS", 2))
    assert [(r["pred"], r["pred_norm"]) for r in rows] == [(0, 0), (0, 1), (1, 1), (0, 0)]
    assert accuracy(rows) == {"examples": 4, "acc": 0.5, "acc_norm": 0.75}
    on, off = 3 - torch.logsumexp(torch.tensor([3.0] + [0.0] * 256), 0), -torch.logsumexp(torch.tensor([3.0] + [0.0] * 256), 0)
    assert rows[1]["logprobs"] == pytest.approx([float(off), 8 * float(on)], abs=1e-4)
    assert all(torch.equal(r, parse_policy("BS", 2).route) for r in model.routes)  # the policy's route reached the model


def test_context_whitespace_moves_to_the_choice():
    tok = ByteTokenizer()
    assert encode_pair(tok, "wx ", "y") == (list(b"wx"), list(b" y"))
    assert encode_pair(tok, "", "ab") == ([tok.eos_id], list(b"ab"))


def test_batched_scores_equal_one_by_one(model):
    """Right padding of shorter choices changes no score of a real causal model."""
    pairs = [([1, 2, 3], [4]), ([5, 6], [7, 8, 9, 10, 11]), ([12], [13, 14])]
    pol = parse_policy("BS", 2)
    batched, greedy = score_continuations(model, pairs, pol, torch.Generator())
    single = torch.cat([score_continuations(model, [p], pol, torch.Generator())[0] for p in pairs])
    assert torch.allclose(batched, single, atol=1e-5) and greedy.dtype == torch.bool


def test_mc_command_json_and_bad_input(debug_run, mc_file, tmp_path, capsys):
    code, out, err = run_cli(capsys, "mc", "--run", str(debug_run), "--data", str(mc_file), "--policy", "random:0.5", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert set(res) == {"policy", "data", "examples", "acc", "acc_norm"} and res["examples"] == 4
    assert 0 <= res["acc"] <= 1 and (debug_run / "evals" / "mc__q__random_0.5.json").exists()
    bad = tmp_path / "bad.jsonl"
    for line, message in [
        ('{"context": "a", "choices": ["b", "c"], "label": 2}', "bad.jsonl:1: label 2"),
        ("not json", "bad.jsonl:1: expected"),
    ]:
        bad.write_text(line + "\n")
        code, _, err = run_cli(capsys, "mc", "--run", str(debug_run), "--data", str(bad))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "mc", "--run", str(debug_run), "--data", str(tmp_path / "none.jsonl"))
    assert code == 2 and "not found" in err


@pytest.fixture
def fake_lm_eval(monkeypatch):
    """A stand-in for lm-eval's two names the adapter uses (the real package is an optional extra)."""
    registry = {}
    model_mod, registry_mod = types.ModuleType("lm_eval.api.model"), types.ModuleType("lm_eval.api.registry")
    model_mod.LM = type("LM", (), {"__init__": lambda self: None})
    registry_mod.register_model = lambda *names: lambda cls: registry.update(dict.fromkeys(names, cls)) or cls
    for name, mod in [("lm_eval", types.ModuleType("lm_eval")), ("lm_eval.api", types.ModuleType("lm_eval.api"))]:
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setitem(sys.modules, "lm_eval.api.model", model_mod)
    monkeypatch.setitem(sys.modules, "lm_eval.api.registry", registry_mod)
    monkeypatch.delitem(sys.modules, "duollm.eval.harness", raising=False)
    yield registry
    sys.modules.pop("duollm.eval.harness", None)


def test_harness_adapter(fake_lm_eval, debug_run):
    harness = importlib.import_module("duollm.eval.harness")
    assert fake_lm_eval["duollm"] is harness.DuoHarnessLM
    lm = harness.DuoHarnessLM(run=str(debug_run), policy="BS-")
    req = SimpleNamespace
    ((lp, greedy),) = lm.loglikelihood([req(args=("In the", " beginning"))])
    want, _ = score_continuations(lm.model, [encode_pair(lm.tok, "In the", " beginning")], lm.policy, torch.Generator())
    assert lp == pytest.approx(float(want[0])) and isinstance(greedy, bool)
    asks = [("In the", " beginning"), ("", "light"), ("And God said, Let there be", " light: and there was light"), ("a", " b")]
    batched = harness.DuoHarnessLM(run=str(debug_run), policy="BS-", batch_size=3).loglikelihood([req(args=a) for a in asks])
    for (ctx, cont), (lp, greedy) in zip(asks, batched, strict=True):  # batched and padded, in the requests' order
        one, g = score_continuations(lm.model, [encode_pair(lm.tok, ctx, cont)], lm.policy, torch.Generator())
        assert lp == pytest.approx(float(one[0]), rel=1e-5, abs=1e-4) and greedy == bool(g[0])
    text = "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 2  # 104 bytes after <|endoftext|>: two windows of 64
    (rolling,) = lm.loglikelihood_rolling([req(args=(text,))])
    ids = [lm.tok.eos_id] + lm.tok.encode_batch([text])[0]
    first, _ = score_continuations(lm.model, [(ids[:1], ids[1:64])], lm.policy, torch.Generator())
    second, _ = score_continuations(lm.model, [(ids[41:64], ids[64:])], lm.policy, torch.Generator())
    assert rolling == pytest.approx(float(first[0] + second[0]), rel=1e-6)  # every token once, the last window full
    (out,) = lm.generate_until([req(args=("In the", {"until": ["e"], "max_gen_toks": 8}))])
    assert isinstance(out, str) and "e" not in out and len(out) <= 8


def test_harness_without_lm_eval_names_the_package(monkeypatch):
    from duollm.errors import DuoError

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "duollm.eval.harness", raising=False)
    with pytest.raises(DuoError, match="pip install 'lm-eval"):
        importlib.import_module("duollm.eval.harness")

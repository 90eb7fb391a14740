"""The training-free policies' strings (`skipllm:`, `exit:`), the FLOPs a policy spends per token, and both through
`duollm eval`, `duollm mc` and `duollm generate`. Run: pytest tests/eval/test_policy.py"""

import json

import pytest
import torch

from duollm import Choice
from duollm.eval.policy import parse_policy
from duollm.routers.training_free import EarlyExit, FFNSkip
from duollm.routing.cost import cost_table, route_cost
from duollm.routing.route import parse_route
from duollm.runs.load import load_run
from tests.conftest import run_cli


def test_parse_training_free_policies():
    r = parse_policy("skipllm:0.95", 12).router
    assert isinstance(r, FFNSkip) and (r.threshold, r.first, r.last, r.warmup, r.window) == (0.95, 2, 2, 8, 2)
    r = parse_policy("skipllm:0.9,first=1,last=0,warmup=0,window=3", 6).router
    assert (r.threshold, r.first, r.last, r.warmup, r.window) == (0.9, 1, 0, 0, 3)
    r = parse_policy("exit:0.9", 4).router
    assert isinstance(r, EarlyExit) and (r.threshold, r.to, r.every, r.first) == (0.9, Choice.SKIP, 1, 0) and r.checked(4) == [0, 1, 2]
    r = parse_policy("exit:1,to=small,every=2,from=1", 6).router
    assert (r.threshold, r.to, r.every, r.first) == (1.0, Choice.SMALL, 2, 1) and r.checked(6) == [1, 3]
    pol = parse_policy("exit:0.5", 4)
    assert pol.route is None and pol.p is None and pol.decode_args(torch.Generator()) == {"router": pol.router}


@pytest.mark.parametrize(
    "text, match",
    [
        ("skipllm:2", "threshold 2 is outside (0, 1]"),
        ("skipllm:0", "outside (0, 1]"),
        ("skipllm:nan", "outside (0, 1]"),
        ("exit:high", "threshold 'high' is not a number"),
        ("exit:1.5", "outside (0, 1]"),
        ("skipllm:", "is not a number"),
        ("skipllm:0.9,depth=3", "unknown setting 'depth'"),
        ("skipllm:0.9,to=small", "unknown setting 'to'"),
        ("exit:0.9,window=2", "unknown setting 'window'"),
        ("skipllm:0.9,first", "'first' is not a new key=value setting"),
        ("skipllm:0.9,first=1,first=2", "'first=2' is not a new key=value setting"),
        ("skipllm:0.9,first=-1", "first=-1 is not a whole number >= 0"),
        ("skipllm:0.9,window=0", "window=0 is not a whole number >= 1"),
        ("skipllm:0.9,warmup=2.5", "warmup=2.5 is not a whole number"),
        ("skipllm:0.9", "no layer of 4 can skip with first=2, last=2, window=2"),
        ("skipllm:0.9,first=0,last=1,window=3", "no layer of 4 can skip"),
        ("exit:0.9,to=big", "to=big is neither skip nor small"),
        ("exit:0.9,every=0", "every=0 is not a whole number >= 1"),
        ("exit:0.9,from=3", "from=3 leaves no layer to check before the last of 4"),
    ],
)
def test_bad_training_free_policies(text, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as e:
        parse_policy(text, 4)
    assert "\n" not in str(e.value) and "use " in str(e.value)  # one line, saying how to write it


def test_policy_flops_by_hand():
    # d=4, big 8, small 2, vocab 10, T=3, 2 heads with 1 kv head, 4 layers (tests/routing/test_cost.py)
    t = cost_table(n_layer=4, d_model=4, d_big=8, d_small=2, vocab_size=10, seq_len=3, n_head=2, n_kv_head=1)
    attn, big, small, head = 2 * (16 + 8 + 8 + 16) + 2 * 2 * 4 * 2, 2 * 3 * 4 * 8, 2 * 3 * 4 * 2, 2 * 4 * 10
    routes = torch.stack([parse_route(s, 4) for s in ("BB--", "BBSS", "BBBB", "B--B")])[None]  # (1, 4, L)
    base = 4 * attn + head
    assert parse_policy("exit:0.5", 4).flops(routes[:, :3], t).tolist() == [
        [base + 2 * big + 2 * head, base + 2 * big + 2 * small + 2 * head, base + 4 * big + 3 * head]
    ]
    assert parse_policy("exit:0.5,every=2", 4).flops(routes[:, 2:3], t).tolist() == [[base + 4 * big + 2 * head]]  # after 0, 2
    assert parse_policy("skipllm:0.5,first=1,last=1,window=1", 4).flops(routes[:, 3:], t).tolist() == [[base + 2 * big]]
    static = parse_policy("B-SB", 4)
    assert float(static.flops(static.route, t)) == base + 2 * big + small


@pytest.fixture(scope="module")
def run_dir(debug_run):
    return debug_run


def eval_json(capsys, run_dir, policy):
    code, out, err = run_cli(capsys, "eval", "--run", str(run_dir), "--policy", policy, "--split", "synthetic-val", "--json")
    assert code == 0, err
    return json.loads(out)


def test_eval_reports_flops_per_token(run_dir, capsys):
    cfg, _, _ = load_run(run_dir, "cpu")
    table = cfg.model.cost(cfg.train.seq_len)
    big = eval_json(capsys, run_dir, "all-big")
    assert big["flops_per_token"] == big["flops_all_big"] == round(float(route_cost(parse_route("BBB", 3), table)))
    static = eval_json(capsys, run_dir, "B--")
    assert static["flops_per_token"] == round(float(route_cost(parse_route("B--", 3), table)))
    exits = eval_json(capsys, run_dir, "exit:0.000001")  # every token is confident after layer 0: B-- and one head check
    assert exits["flops_per_token"] == static["flops_per_token"] + round(table.head)
    assert exits["loss"] == pytest.approx(static["loss"], abs=1e-4)
    never = eval_json(capsys, run_dir, "exit:1,every=1")
    assert never["flops_per_token"] == big["flops_per_token"] + 2 * round(table.head) and never["loss"] == big["loss"]
    skip = eval_json(capsys, run_dir, "skipllm:0.5,first=1,last=1,window=1,warmup=4")
    assert static["flops_per_token"] <= skip["flops_per_token"] <= big["flops_per_token"] and set(skip) >= {"ppl", "tokens", "policy"}
    code, out, _ = run_cli(capsys, "eval", "--run", str(run_dir), "--policy", "exit:0.5", "--split", "synthetic-val")
    assert code == 0 and "MFLOP/token" in out and "of all-big" in out


def test_mc_and_generate_take_the_policies(run_dir, capsys, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"context": "the cat", "choices": [" sat", " ran"], "label": 0}) + "\n")
    for policy in ("skipllm:0.5,first=1,last=1,window=1,warmup=2", "exit:0.000001,to=small"):
        code, out, err = run_cli(capsys, "mc", "--run", str(run_dir), "--data", str(data), "--policy", policy, "--json")
        assert code == 0 and json.loads(out)["examples"] == 1, err
        code, out, err = run_cli(
            capsys, "generate", "--run", str(run_dir), "--prompt", "the cat", "--policy", policy, "--max-new-tokens", "5", "--json"
        )
        assert code == 0, err
        res = json.loads(out)
        assert len(res["tokens"]) == 5 and all(len(r) == 3 for r in res["routes"])
        if policy.startswith("exit"):
            assert set(res["routes"]) == {"BSS"}


@pytest.mark.parametrize("command", ["eval", "mc", "generate"])
@pytest.mark.parametrize("policy, match", [("skipllm:2", "outside (0, 1]"), ("exit:0.9,to=big", "neither skip nor small")])
def test_bad_policies_exit_2_with_one_line(run_dir, capsys, tmp_path, command, policy, match):
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"context": "a", "choices": ["b", "c"], "label": 0}) + "\n")
    where = {"eval": ["--split", "synthetic-val"], "mc": ["--data", str(data)], "generate": ["--prompt", "x"]}[command]
    code, _, err = run_cli(capsys, command, "--run", str(run_dir), "--policy", policy, *where)
    assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err
    assert not (run_dir / "evals" / f"synthetic-val__{policy.replace(':', '_')}.safetensors").exists()

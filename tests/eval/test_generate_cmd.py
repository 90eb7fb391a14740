"""`duollm generate` end to end on a tiny run. Run: pytest tests/eval/test_generate_cmd.py"""

import json

import pytest
import torch

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def run_dir(debug_run):
    return debug_run


def gen(capsys, *argv):
    return run_cli(capsys, "generate", *argv)


@pytest.mark.parametrize("policy", ["all-big", "S-B", "random:0.5,0.3,0.2"])
def test_generate_json(run_dir, capsys, policy):
    code, out, err = gen(capsys, "--run", str(run_dir), "--prompt", "the cat", "--policy", policy, "--max-new-tokens", "6", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert len(res["tokens"]) == 6 and len(res["routes"]) == 6 and all(len(r) == 3 for r in res["routes"])
    if policy == "S-B":
        assert set(res["routes"]) == {"S-B"} and res["realized"]["skip"] == pytest.approx(1 / 3)


def test_prompts_file_batches_and_keeps_order(run_dir, capsys, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("ab\nlonger prompt\ncd\n")
    code, out, err = gen(capsys, "--run", str(run_dir), "--prompts", str(f), "--max-new-tokens", "4", "--json")
    assert code == 0, err
    res = json.loads(out)["results"]
    assert [r["prompt"] for r in res] == ["ab", "longer prompt", "cd"]
    code, out1, _ = gen(capsys, "--run", str(run_dir), "--prompt", "longer prompt", "--max-new-tokens", "4", "--json")
    assert json.loads(out1)["tokens"] == res[1]["tokens"]  # batching does not change greedy output


@pytest.mark.parametrize("draft", ["all-small", "S-B", "SB."])
def test_speculate_gives_all_bigs_greedy_text(run_dir, capsys, draft):
    argv = ["--run", str(run_dir), "--prompt", "the cat", "--max-new-tokens", "12", "--json"]
    code, out, err = gen(capsys, *argv)
    assert code == 0, err
    plain = json.loads(out)
    code, out, err = gen(capsys, *argv, "--speculate", draft, "--draft-tokens", "3")
    assert code == 0, err
    res = json.loads(out)
    assert res["tokens"] == plain["tokens"] and res["text"] == plain["text"]
    sp = res["speculation"]
    assert sp["k"] == 3 and sp["draft"] == {"all-small": "SSS"}.get(draft, draft) and 0 <= sp["acceptance"] <= 1
    code, out, err = gen(capsys, *argv[:-1], "--speculate", draft)  # the text form
    assert code == 0 and "drafts kept" in out, err


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "give --prompt TEXT or --prompts FILE"),
        (["--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["--prompt", "x", "--max-new-tokens", "500"], "exceeds the model's max_seq_len"),
        (["--prompt", "x", "--policy", "BB"], "has 2 layers, the model has 3"),
        (["--prompt", "x", "--policy", "router:none"], "no router 'none'"),
        (["--prompt", "x", "--speculate", "SS"], "--speculate: route string 'SS' has 2 layers"),
        (["--prompt", "x", "--speculate", "SSS", "--temperature", "0.5"], "--speculate decodes all-BIG's greedy text"),
        (["--prompt", "x", "--speculate", "S.S"], "'.' (a layer not run) only ends a route"),
        (["--prompt", "x", "--speculate", "..."], "'.' (a layer not run) only ends a route"),
        (["--prompt", "x", "--speculate", "B...."], "route string 'B....' has 5 layers"),
        (["--prompt", "x", "--speculate", "X."], "bad route string 'X.'"),
    ],
)
def test_bad_input(run_dir, capsys, argv, match):
    code, _, err = gen(capsys, "--run", str(run_dir), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_gpu_the_graph_decoder_gives_the_reference_tokens(run_dir, capsys):
    """On a GPU `duollm generate` decodes a static route through CUDA graphs: the reference's tokens."""
    from duollm.model.decode import generate
    from duollm.routing.route import parse_route
    from duollm.runs.load import load_run

    code, out, err = gen(capsys, "--run", str(run_dir), "--prompt", "the cat", "--policy", "S-B", "--max-new-tokens", "8", "--json")
    assert code == 0, err
    _, model, tok = load_run(run_dir, "cuda")
    ids = torch.tensor(tok.encode_batch(["the cat"]), device="cuda")
    ref = generate(model, ids, 8, route=parse_route("S-B", 3))
    assert json.loads(out)["tokens"] == ref.ids[0, ids.shape[1] :].tolist()

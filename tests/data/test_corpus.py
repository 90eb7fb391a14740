"""User data, token shards and batches. Run: pytest tests/data/test_corpus.py"""

import json

import numpy as np
import pytest
import torch

from duollm.data.corpus import documents, eval_windows, pick_windows, sample_batch, token_array
from duollm.data.tokenizer import ByteTokenizer, load_tokenizer
from duollm.errors import DuoError


def test_user_text_folder_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.md").write_text("one")
    (tmp_path / "d" / "y.py").write_text("two")
    (tmp_path / "d" / "skip.bin").write_bytes(b"\0\1")
    (tmp_path / "j.jsonl").write_text(json.dumps({"text": "first"}) + "\n\n" + json.dumps({"text": "second"}) + "\n")
    assert documents(str(tmp_path / "a.txt")) == {"a.txt": "hello"}
    assert documents(str(tmp_path / "d")) == {"x.md": "one", "y.py": "two"}
    assert list(documents(str(tmp_path / "j.jsonl")).values()) == ["first", "second"]


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_text("  \n"), "no text"),
        (lambda p: p.write_bytes(b"abc\x00def"), "binary"),
        (lambda p: p.write_bytes(b"caf\xe9"), "not UTF-8"),
    ],
)
def test_bad_user_files(tmp_path, setup, match):
    p = tmp_path / "data.txt"
    setup(p)
    with pytest.raises(DuoError, match=match):
        documents(str(p))


def test_bad_jsonl(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DuoError, match=r"d.jsonl:2 is not valid JSON"):
        documents(str(p))
    p.write_text('{"body": "x"}\n')
    with pytest.raises(DuoError, match='no string field "text"'):
        documents(str(p))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DuoError, match="no text found"):
        documents(str(tmp_path / "empty"))


def test_token_array_is_cached_and_joined_with_eos(tmp_path):
    (tmp_path / "t.txt").write_text("ab")
    tok = ByteTokenizer()
    a = token_array(str(tmp_path / "t.txt"), tok, cache=tmp_path / "c")
    assert a.tolist() == [97, 98, 256] and a.dtype == np.uint16
    assert len(list((tmp_path / "c" / "tokens").iterdir())) == 1
    token_array(str(tmp_path / "t.txt"), tok, cache=tmp_path / "c")
    assert len(list((tmp_path / "c" / "tokens").iterdir())) == 1  # read back, not rebuilt


def test_batches_follow_the_generator():
    toks = np.arange(1000, dtype=np.uint16)
    a = sample_batch(toks, 4, 9, torch.Generator().manual_seed(0))
    b = sample_batch(toks, 4, 9, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (4, 9)
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(4, 8, dtype=torch.long))  # contiguous windows
    with pytest.raises(DuoError, match="fewer than one sequence"):
        sample_batch(toks[:5], 1, 9, torch.Generator())


def test_eval_windows_cover_the_data_in_order():
    w = eval_windows(np.arange(25, dtype=np.uint16), 8)
    assert w.shape == (3, 8) and w[2, 7] == 23


def test_pick_windows_first_or_spread():
    w = torch.arange(10).view(10, 1)
    assert pick_windows(w, 3).flatten().tolist() == [0, 1, 2]
    assert pick_windows(w, 3, "spread").flatten().tolist() == [0, 3, 6]  # one from each third
    assert pick_windows(w, 10, "spread").flatten().tolist() == list(range(10))
    assert len(pick_windows(w, 99, "spread")) == 10 and len(pick_windows(w, 0, "spread")) == 0
    with pytest.raises(DuoError, match="--pick must be one of first, spread"):
        pick_windows(w, 3, "random")


def test_tokenizers():
    assert ByteTokenizer().decode(ByteTokenizer().encode_batch(["héllo"])[0]) == "héllo"
    tok = load_tokenizer("builtin")
    assert 4096 <= tok.vocab_size <= 8192 and tok.eos_id == 0
    text = "In the beginning, God created.\ndef f(x):\n    return x"
    assert tok.decode(tok.encode_batch([text])[0]) == text
    with pytest.raises(DuoError, match="tokenizer file not found"):
        load_tokenizer("/nonexistent/tokenizer.json")


def test_bad_tokenizer_file(tmp_path):
    p = tmp_path / "tokenizer.json"
    p.write_text("{not json")
    with pytest.raises(DuoError, match="cannot load tokenizer"):
        load_tokenizer(str(p))

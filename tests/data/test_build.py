"""`duollm data build` without network: splits by document, manifest and sha256 bookkeeping, idempotent
rebuilds, the archive round trip, the offline error. Sources are faked; the real packages are never fetched.
Run: pytest tests/data/test_build.py"""

import hashlib
import json
import shutil
import subprocess
import tarfile

import pytest

from duollm.data import build, built, corpus, study_sources
from duollm.errors import DuoError
from tests.conftest import run_cli

FAKE = (
    build.Source("books", "prose", "fake-books", "1.0", "", 0, "fake"),
    build.Source("dict", "prose", "fake-dict", "2.0", "", 0, "fake"),
    build.Source("py", "code", "", "", "", 0, "fake"),
)


def fake_docs(s, n=12):
    words = "the cat sat on a mat and then it ran far away from home".split()
    if s.domain == "code":
        return {f"m{i}.py": f"def f{i}(x):\n    return x + {i}\n" * (i + 1) for i in range(n)}
    return {f"{s.name}{i}": " ".join(words[(i + j) % len(words)] for j in range(40 + 10 * i)) for i in range(n)}


class Extract:
    """A fake extract step that counts its calls per source."""

    def __init__(self):
        self.calls = []

    def __call__(self, s):
        self.calls.append(s.name)
        return fake_docs(s)


def make(tmp_path, extract_fn=None, archive=True):
    out = tmp_path / "corpus"
    arc = tmp_path / "corpus.tar.xz" if archive else None
    return build.build(out, 1024, arc, FAKE, extract_fn or Extract(), log=lambda _: None), out


def test_assign_splits_whole_documents_stable_and_sized():
    docs = {f"d{i}": "x" * (100 + i) for i in range(100)}
    split = build.assign_splits("src", docs, 0.05)
    val = [n for n, sp in split.items() if sp == "val"]
    val_bytes = sum(len(docs[n]) for n in val)
    assert set(split.values()) == {"train", "val"} and 0.05 * 14950 <= val_bytes < 0.05 * 14950 + 200
    assert build.assign_splits("src", dict(reversed(docs.items())), 0.05) == split  # order does not matter
    assert build.assign_splits("other", docs, 0.05) != split  # the source name salts the order
    assert list(build.assign_splits("s", {"a": "x" * 1000, "b": "y"}, 0.05).values()).count("val") == 1
    assert build.assign_splits("s", {"only": "x"}, 0.05) == {"only": "train"}


def test_build_manifest_splits_and_hashes(tmp_path):
    m, out = make(tmp_path)
    assert m["kind"] == "duollm-corpus"
    assert set(m["splits"]) == set(build.SPLITS) and m["tokenizer"]["vocab_size"] == 1024
    for f, rec in m["files"].items():  # every output file with its size and sha256
        data = (out / f).read_bytes()
        assert rec == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    seen = {}
    for sp in build.SPLITS:  # each document in exactly one split, matching its source's record
        for name in built.read_split(out, sp):
            assert name not in seen
            seen[name] = sp
    for s in FAKE:
        rec = m["sources"][s.name]
        assert rec["documents"] == 12 and rec["package"] == s.package and rec["tokens"] > rec["documents"]
        assert {n for n, sp in seen.items() if n.startswith(s.name + "/") and sp.endswith("val")} == {
            f"{s.name}/{d}" for d in rec["val_documents"]
        }
        assert sum(r["bytes"] for r in rec["splits"].values()) == rec["bytes"]
    assert m["totals"]["prose"]["tokens"] == m["splits"]["prose-train"]["tokens"] + m["splits"]["prose-val"]["tokens"]
    assert json.loads((out / "MANIFEST.json").read_text())["archive"]["sha256"] == m["archive"]["sha256"]
    # training reads a built corpus folder as its train splits, held-out files as .jsonl
    train = corpus.documents(str(out))
    assert set(train) == {n for n, sp in seen.items() if sp.endswith("train")}
    assert len(corpus.documents(str(out / "prose-val.jsonl"))) == m["splits"]["prose-val"]["documents"]


def test_rebuild_is_idempotent_and_redoes_only_what_changed(tmp_path):
    ex = Extract()
    m1, out = make(tmp_path, ex)
    assert ex.calls == ["books", "dict", "py"]
    stamps = {p.name: p.stat().st_mtime_ns for p in [*out.rglob("*"), tmp_path / "corpus.tar.xz"] if p.is_file()}
    m2, _ = make(tmp_path, ex)
    assert ex.calls == ["books", "dict", "py"]  # nothing fetched again
    assert {
        p.name: p.stat().st_mtime_ns for p in [*out.rglob("*"), tmp_path / "corpus.tar.xz"] if p.is_file() and p.name != "MANIFEST.json"
    } == {k: v for k, v in stamps.items() if k != "MANIFEST.json"}
    assert m2["archive"]["sha256"] == m1["archive"]["sha256"] and m2["files"] == m1["files"]
    (out / "sources" / "dict.jsonl").write_text("damaged\n")  # a source whose file no longer matches
    m3, _ = make(tmp_path, ex)
    assert ex.calls[3:] == ["dict"] and m3["files"] == m1["files"]


def test_archive_round_trip_and_corruption(tmp_path, capsys):
    m, out = make(tmp_path)
    code, stdout, _ = run_cli(
        capsys, "data", "build", "--from-archive", str(tmp_path / "corpus.tar.xz"), "--out", str(tmp_path / "gpu"), "--json"
    )
    assert code == 0 and json.loads(stdout)["splits"]["code-val"]["tokens"] == m["splits"]["code-val"]["tokens"]
    for sp in build.SPLITS:
        assert (tmp_path / "gpu" / f"{sp}.jsonl").read_bytes() == (out / f"{sp}.jsonl").read_bytes()
    assert build.is_built_corpus(tmp_path / "gpu")
    bad = tmp_path / "bad.tar.xz"
    with tarfile.open(bad, "w:xz") as tar:
        tar.add(out / "MANIFEST.json", arcname="MANIFEST.json")
        tar.add(out / "prose-val.jsonl", arcname="../escape.jsonl")
    code, _, err = run_cli(capsys, "data", "build", "--from-archive", str(bad), "--out", str(tmp_path / "x"))
    assert code == 2 and "not a corpus archive" in err and not (tmp_path / "escape.jsonl").exists()
    code, _, err = run_cli(capsys, "data", "build", "--from-archive", str(tmp_path / "none.tar.xz"))
    assert code == 2 and err.count("\n") == 1 and "not found" in err


def test_offline_names_the_package_and_exits_2(tmp_path, capsys, monkeypatch):
    def no_network(cmd, **kw):
        assert cmd[:2] == ["apt-get", "download"]
        return subprocess.CompletedProcess(cmd, 100, "", "E: Failed to fetch ... Temporary failure resolving\n")

    monkeypatch.setattr(subprocess, "run", no_network)
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")  # as on a Debian machine
    code, out, err = run_cli(capsys, "data", "build", "--out", str(tmp_path / "c"))
    assert code == 2 and err.count("\n") == 1
    assert "could not download sword-text-web 426.0-1" in err and "Temporary failure resolving" in err
    assert "downloading 7 Debian packages" in out  # it said what it would download first
    assert not list((tmp_path / "c").iterdir())


def test_pinned_sha256_is_checked(tmp_path):
    (tmp_path / "sword-text-web_426.0-1_all.deb").write_bytes(b"not the package")
    with pytest.raises(DuoError, match="expected 930b2367"):
        study_sources.fetch_deb(study_sources.SOURCES[0], tmp_path, debs=tmp_path)
    with pytest.raises(DuoError, match="out of range"):
        build.build(tmp_path / "c", 100, None, FAKE, Extract())


def test_a_foreign_folder_is_never_overwritten(tmp_path, capsys):
    """--out on a user's folder, and an archive whose files fail their sha256, leave every file as it was."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "tokenizer.json").write_text("my own")
    code, _, err = run_cli(capsys, "data", "build", "--out", str(mine))
    assert code == 2 and "no corpus MANIFEST.json" in err and (mine / "tokenizer.json").read_text() == "my own"
    code, _, err = run_cli(capsys, "data", "build", "--from-archive", str(tmp_path / "none.tar.xz"), "--out", str(mine))
    assert code == 2 and (mine / "tokenizer.json").read_text() == "my own"


def test_a_corrupt_archive_leaves_the_corpus_as_it_was(tmp_path, capsys):
    m, out = make(tmp_path)
    gpu = tmp_path / "gpu"
    assert run_cli(capsys, "data", "build", "--from-archive", str(tmp_path / "corpus.tar.xz"), "--out", str(gpu))[0] == 0
    before = {p.name: p.read_bytes() for p in gpu.iterdir()}
    (tmp_path / "tokenizer.json").write_text("{}")  # a tokenizer whose sha256 is not the manifest's
    bad = tmp_path / "bad.tar.xz"
    with tarfile.open(bad, "w:xz") as tar:
        for name in [f"{sp}.jsonl" for sp in build.SPLITS] + ["MANIFEST.json"]:
            tar.add(out / name, arcname=name)
        tar.add(tmp_path / "tokenizer.json", arcname="tokenizer.json")
    code, _, err = run_cli(capsys, "data", "build", "--from-archive", str(bad), "--out", str(gpu))
    assert code == 2 and "corrupt" in err
    assert {p.name: p.read_bytes() for p in gpu.iterdir()} == before

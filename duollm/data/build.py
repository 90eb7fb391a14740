"""`duollm data build`: the offline training corpus of the GPU study, its BPE, and the archive it travels in.

Prose comes from seven Debian packages, each fetched with `apt-get download` at a pinned version, checked
against a pinned sha256 and unpacked with `dpkg -x` into a temporary folder (nothing is installed); code is
the Python standard library of the running interpreter, tests included. `extract.py` turns the package files
into documents. Every source is split into `train` and `val` by whole documents (a document is a Bible
book, a commentary chapter, a dictionary's two-letter section, a WordNet lexicographer file, an Info node,
a kernel RST file or a Python file), so no held-out text is seen in training.

Output folder (default `<repo>/.cache/corpus/`, git-ignored):
    sources/<name>.jsonl         one document per line: {"doc", "split", "text"} (what each source gave)
    prose-train.jsonl ... code-val.jsonl   the four splits: {"source", "doc", "text"} per line
    tokenizer.json               byte-level BPE (HF tokenizers) trained on the train splits only
    MANIFEST.json                packages, versions, sha256s, documents, bytes, tokens, every file's sha256

and `<out>.tar.xz` beside it: the splits, the tokenizer and the manifest, under 50 MiB, the form in which
the corpus travels to a machine without network (`duollm data build --from-archive FILE`). Every step is
skipped when its recorded inputs and outputs still match (a rerun downloads nothing), and every file is
written to a temporary name and renamed, so an interrupted build leaves no half-written file behind.

The pins of packages that Debian updates in place (`python3.11-doc`, `linux-doc-6.1` take security updates)
go stale when the archive drops that version: `apt-get download` then fails with one line naming the
package; update its version, sha256 and size in SOURCES (the splits change with it), or build from .deb files
kept elsewhere (`--debs DIR`), or unpack an archive built earlier (`--from-archive FILE`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from duollm.data.built import SPLITS, TRAIN_SPLITS, is_built_corpus, read_jsonl
from duollm.data.sources import sha256_file
from duollm.data.study_sources import SOURCES, Source, extract_source, source_version
from duollm.data.tokenizer import load_tokenizer, train_bpe
from duollm.errors import DuoError
from duollm.files import atomic_path, temp_name, write_json

VAL_FRACTION = 0.05  # of each source's bytes, in whole documents
ARCHIVE_LIMIT = 50 * 2**20  # what the archive should stay under to travel with the code


# ----------------------------------------------------------------------------- splits


def assign_splits(source: str, docs: dict[str, str], fraction: float = VAL_FRACTION) -> dict[str, str]:
    """Document name → "train" or "val": documents in the order of the sha256 of `source/name` go to val
    until val holds `fraction` of the source's bytes (at least one document when there are two or more).
    Depends only on names and sizes, so it is the same on every machine and in every order."""
    total = sum(len(t.encode()) for t in docs.values())
    order = sorted(docs, key=lambda n: hashlib.sha256(f"{source}/{n}".encode()).hexdigest())
    split, val = dict.fromkeys(docs, "train"), 0
    for n in order:
        if len(docs) < 2 or (val >= fraction * total and val > 0):
            break
        split[n], val = "val", val + len(docs[n].encode())
    return split


# ----------------------------------------------------------------------------- files


class _Writer:
    """A file written under a temporary name, hashed as it goes, renamed into place on `commit()`."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, temp_name(path)
        self.f, self.h, self.n = open(self.tmp, "wb"), hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.h.update(data)
        self.n += len(data)

    def commit(self) -> dict:
        self.f.close()
        os.replace(self.tmp, self.path)
        return {"file_bytes": self.n, "sha256": self.h.hexdigest()}

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


def _file_ok(out: Path, rec: dict | None) -> bool:
    """The file a manifest record names exists and still has the recorded sha256."""
    return bool(rec) and (out / rec["file"]).is_file() and sha256_file(out / rec["file"]) == rec["sha256"]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the build


def source_done(out: Path, manifest: dict, s: Source) -> bool:
    rec = manifest["sources"].get(s.name)
    pin = {"package": s.package, "version": source_version(s), "deb_sha256": s.sha256, "val_fraction": VAL_FRACTION}
    return bool(rec) and all(rec.get(k) == v for k, v in pin.items()) and _file_ok(out, rec)


def write_source(out: Path, s: Source, docs: dict[str, str]) -> dict:
    """`sources/<name>.jsonl` (one document per line with its split) and the source's manifest record."""
    split = assign_splits(s.name, docs)
    (out / "sources").mkdir(parents=True, exist_ok=True)
    w = _Writer(out / "sources" / f"{s.name}.jsonl")
    try:
        for name, text in docs.items():
            w.write((json.dumps({"doc": name, "split": split[name], "text": text}, ensure_ascii=False) + "\n").encode())
        file = w.commit()
    except BaseException:
        w.abort()
        raise
    count = {sp: {"documents": 0, "bytes": 0} for sp in ("train", "val")}
    for name, text in docs.items():
        count[split[name]]["documents"] += 1
        count[split[name]]["bytes"] += len(text.encode())
    return {
        "domain": s.domain,
        "package": s.package,
        "version": source_version(s),
        "deb_sha256": s.sha256,
        "deb_bytes": s.size,
        "val_fraction": VAL_FRACTION,
        "documents": len(docs),
        "bytes": count["train"]["bytes"] + count["val"]["bytes"],
        "splits": {f"{s.domain}-{sp}": c for sp, c in count.items()},
        "val_documents": sorted(n for n in docs if split[n] == "val"),
        "file": f"sources/{s.name}.jsonl",
        **file,
    }


def write_splits(out: Path, manifest: dict, sources: tuple[Source, ...]) -> None:
    """The four split files, assembled from the source files in table order."""
    ws = {sp: _Writer(out / f"{sp}.jsonl") for sp in SPLITS}
    counts = {sp: {"documents": 0, "bytes": 0} for sp in SPLITS}
    try:
        for s in sources:
            for r in read_jsonl(out / manifest["sources"][s.name]["file"]):
                sp = f"{s.domain}-{r['split']}"
                ws[sp].write((json.dumps({"source": s.name, "doc": r["doc"], "text": r["text"]}, ensure_ascii=False) + "\n").encode())
                counts[sp]["documents"] += 1
                counts[sp]["bytes"] += len(r["text"].encode())
        files = {sp: w.commit() for sp, w in ws.items()}
    except BaseException:
        for w in ws.values():
            w.abort()
        raise
    manifest["splits"] = {sp: {**counts[sp], "file": f"{sp}.jsonl", **files[sp]} for sp in SPLITS}


def count_tokens(out: Path, manifest: dict, sources: tuple[Source, ...], log: Callable[[str], None]) -> None:
    """Tokens of every source and split with the corpus's BPE, each document ended by `<|endoftext|>`."""
    tok = load_tokenizer(str(out / "tokenizer.json"))
    for sp in manifest["splits"].values():
        sp["tokens"] = 0
    for s in sources:
        rec = manifest["sources"][s.name]
        per: dict[str, int] = {}
        batch: list[tuple[str, str]] = []

        def flush(batch=batch, per=per):
            for (sp, _), ids in zip(batch, tok.encode_batch([t for _, t in batch]), strict=True):
                per[sp] = per.get(sp, 0) + len(ids) + 1
            batch.clear()

        for r in read_jsonl(out / rec["file"]):
            batch.append((f"{s.domain}-{r['split']}", r["text"]))
            if len(batch) >= 256:
                flush()
        flush()
        for sp, n in per.items():
            rec["splits"][sp]["tokens"] = n
            manifest["splits"][sp]["tokens"] += n
        rec["tokens"] = sum(per.values())
        log(f"  {s.name}: {rec['tokens']:,} tokens")


def write_archive(out: Path, archive: Path, manifest: dict) -> dict:
    """The splits, the tokenizer and the manifest as one xz-compressed tar (preset 9)."""
    names = [f"{sp}.jsonl" for sp in SPLITS] + ["tokenizer.json", "MANIFEST.json"]
    with atomic_path(archive) as tmp:
        with tarfile.open(tmp, "w:xz", preset=9) as tar:
            for n in names:
                info = tar.gettarinfo(str(out / n), arcname=n)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0  # the same corpus gives the same archive
                with open(out / n, "rb") as f:
                    tar.addfile(info, f)
    return {"file": str(archive), "bytes": archive.stat().st_size, "sha256": sha256_file(archive), "members": names}


def new_manifest() -> dict:
    return {"kind": "duollm-corpus", "format": 1, "sources": {}, "splits": {}, "tokenizer": {}, "files": {}}


def load_manifest(out: Path) -> dict:
    m = out / "MANIFEST.json"
    if not m.is_file():
        return new_manifest()
    try:
        manifest = json.loads(m.read_text())
    except json.JSONDecodeError:
        return new_manifest()
    return manifest if manifest.get("kind") == "duollm-corpus" else new_manifest()


def build(
    out: Path,
    vocab: int = 16384,
    archive: Path | None = None,
    sources: tuple[Source, ...] = SOURCES,
    extract_fn: Callable[[Source], dict[str, str]] = extract_source,
    log: Callable[[str], None] = print,
) -> dict:
    """Build (or finish, or confirm) the corpus in `out`; return its manifest. See the module docstring."""
    if not 1024 <= vocab <= 65536:
        raise DuoError(f"--vocab {vocab} is out of range (1024 to 65536; 16384 to 32768 for the study)")
    if out.exists() and not out.is_dir():
        raise DuoError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_built_corpus(out):
        raise DuoError(f"--out {out} holds files but no corpus MANIFEST.json: nothing there is overwritten; empty it or choose another")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out)
    manifest["sources"] = {k: v for k, v in manifest["sources"].items() if k in {s.name for s in sources}}
    todo = [s for s in sources if not source_done(out, manifest, s)]
    debs = [s for s in todo if s.package]
    if debs:
        mb = sum(s.size for s in debs) / 1e6
        log(
            f"downloading {len(debs)} Debian packages ({mb:.1f} MB) with apt-get download, checked by sha256, unpacked with dpkg -x into a temporary folder:"
        )
        for s in debs:
            log(f"  {s.package} {s.version} ({s.size / 1e6:.1f} MB)")
    for s in sources:
        if s not in todo:
            log(f"{s.name}: up to date ({manifest['sources'][s.name]['bytes'] / 1e6:.1f} MB)")
            continue
        t = time.perf_counter()
        rec = write_source(out, s, extract_fn(s))
        manifest["sources"][s.name] = rec
        write_json(out / "MANIFEST.json", manifest)  # a later run resumes after this source
        log(f"{s.name}: {rec['documents']:,} documents, {rec['bytes'] / 1e6:.1f} MB ({time.perf_counter() - t:.1f} s)")

    src_key = _key([manifest["sources"][s.name]["sha256"] for s in sources], [s.name for s in sources])
    if manifest.get("splits_key") != src_key or not all(_file_ok(out, r) for r in manifest["splits"].values()) or not manifest["splits"]:
        write_splits(out, manifest, sources)
        manifest["splits_key"] = src_key
        log("splits: " + ", ".join(f"{sp} {r['documents']:,} docs {r['bytes'] / 1e6:.1f} MB" for sp, r in manifest["splits"].items()))

    tok_key = _key(src_key, vocab)
    tok_rec = manifest.get("tokenizer") or {}
    if tok_rec.get("key") != tok_key or not _file_ok(out, tok_rec):
        log(f"training a byte-level BPE of {vocab:,} tokens on {', '.join(TRAIN_SPLITS)} ...")
        t = time.perf_counter()
        texts = [r["text"] for sp in TRAIN_SPLITS for r in read_jsonl(out / f"{sp}.jsonl")]
        with atomic_path(out / "tokenizer.json") as tmp:
            train_bpe(texts, vocab, tmp)
        del texts
        manifest["tokenizer"] = {"file": "tokenizer.json", "vocab_size": vocab, "trained_on": list(TRAIN_SPLITS), "key": tok_key}
        manifest["tokenizer"]["sha256"] = sha256_file(out / "tokenizer.json")
        log(f"tokenizer: {time.perf_counter() - t:.0f} s; counting tokens:")
        t = time.perf_counter()
        count_tokens(out, manifest, sources, log)
        log(f"tokens counted ({time.perf_counter() - t:.0f} s)")
        manifest["totals"] = {
            d: {k: sum(r[k] for sp, r in manifest["splits"].items() if sp.startswith(d)) for k in ("documents", "bytes", "tokens")}
            for d in ("prose", "code")
        }

    files = [r["file"] for r in manifest["sources"].values()] + [r["file"] for r in manifest["splits"].values()] + ["tokenizer.json"]
    manifest["files"] = {f: {"bytes": (out / f).stat().st_size, "sha256": sha256_file(out / f)} for f in files}
    manifest["python"] = platform.python_version()
    arc_rec = manifest.pop("archive", None)
    if archive is not None:
        arc_key = _key(manifest["files"])
        if not (
            arc_rec
            and arc_rec.get("key") == arc_key
            and arc_rec["file"] == str(archive)
            and archive.is_file()
            and sha256_file(archive) == arc_rec["sha256"]
        ):
            log(f"writing {archive} (xz -9) ...")
            write_json(out / "MANIFEST.json", manifest)  # the copy inside the archive
            t = time.perf_counter()
            arc_rec = {**write_archive(out, archive, manifest), "key": arc_key}
            log(f"archive: {arc_rec['bytes'] / 2**20:.1f} MiB ({time.perf_counter() - t:.0f} s)")
        if arc_rec["bytes"] > ARCHIVE_LIMIT:
            log(
                f"warning: the archive is {arc_rec['bytes'] / 2**20:.1f} MiB, over the {ARCHIVE_LIMIT / 2**20:.0f} MiB it should stay under"
            )
        manifest["archive"] = arc_rec
    write_json(out / "MANIFEST.json", manifest)
    manifest["seconds"] = time.perf_counter() - t0  # of this call, not stored
    return manifest


# ----------------------------------------------------------------------------- unpacking on another machine


def unpack_archive(archive: Path, out: Path) -> dict:
    """Unpack a corpus archive into `out`: into a temporary folder beside it first, every file checked against the
    manifest inside the archive, and only then moved into place (the manifest last), so a corrupt archive leaves
    `out` as it was."""
    if not archive.is_file():
        raise DuoError(f"corpus archive not found: {archive}")
    if out.is_dir() and any(out.iterdir()) and not is_built_corpus(out):
        raise DuoError(f"{out} holds files but no corpus MANIFEST.json: nothing there is overwritten; choose a new folder")
    names = [f"{sp}.jsonl" for sp in SPLITS] + ["tokenizer.json", "MANIFEST.json"]  # the manifest moves last
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.unpack-", dir=out.parent))
    try:
        try:
            with tarfile.open(archive, "r:xz") as tar:
                members = tar.getmembers()
                bad = [m.name for m in members if m.name not in names or not m.isfile()]
                if bad or "MANIFEST.json" not in {m.name for m in members}:
                    raise DuoError(f"{archive} is not a corpus archive (unexpected members {bad[:3]} or no MANIFEST.json)")
                for m in members:
                    with tar.extractfile(m) as src, open(tmp / m.name, "wb") as f:
                        shutil.copyfileobj(src, f, 1 << 20)
            manifest = json.loads((tmp / "MANIFEST.json").read_text())
        except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError) as e:
            raise DuoError(f"cannot read corpus archive {archive}: {e}") from None
        for name in names[:-1]:
            want = manifest.get("files", {}).get(name, {}).get("sha256")
            if want is None or not (tmp / name).is_file() or sha256_file(tmp / name) != want:
                raise DuoError(f"{name} in {archive} does not match the sha256 in the archive's manifest: the archive is corrupt")
        for name in names:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


# ----------------------------------------------------------------------------- command


def summary(manifest: dict) -> dict:
    keep = ("documents", "bytes", "tokens")
    return {
        "sources": {n: {k: r.get(k) for k in ("package", "version", *keep)} for n, r in manifest["sources"].items()},
        "splits": {n: {k: r.get(k) for k in keep} for n, r in manifest["splits"].items()},
        "totals": manifest.get("totals", {}),
        "vocab_size": manifest["tokenizer"].get("vocab_size"),
        "archive": {k: manifest["archive"][k] for k in ("file", "bytes", "sha256")} if manifest.get("archive") else None,
    }

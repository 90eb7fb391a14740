"""The built-in corpora: where they come from, how they are fetched, and how they are split.

Prose: the narrative books of the World English Bible (public domain), from Debian's `sword-text-web`
package. `fetch_prose` downloads the package with `apt-get download` into a temporary folder, checks its
sha256, unpacks it with `dpkg -x` (no system install), decodes the SWORD zText module and writes one text
file per book, one verse per line, into the cache (`<repo>/.cache/prose/`, git-ignored).

SWORD zText (https://wiki.crosswire.org/DevTools:Modules): per testament, `.bzs` holds 12-byte little-endian
records (offset, compressed size, size) of zlib blocks in `.bzz`; `.bzv` holds 10-byte records (block,
offset, size: u32, u32, u16) of every entry in versification order: module and testament headers, then
per book an introduction entry and per chapter an introduction entry (holding `<chapter osisID="Gen.1"/>`)
followed by the chapter's verses. Verses are OSIS markup; notes and titles are dropped, tags stripped.

Code: the Python files of the running interpreter's standard library (present on every machine).

Held-out splits are whole documents: books for prose (`prose-val`), files for code (`code-val`).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from duollm.data import extract
from duollm.errors import DuoError

PROSE_PACKAGE = "sword-text-web"
PROSE_VERSION = "426.0-1"
PROSE_SHA256 = "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1"
PROSE_MODULE = "usr/share/sword/modules/texts/ztext/engWEB2015eb"
# OSIS book ids of the narrative books, in canonical order, and the books held out for validation.
PROSE_BOOKS = ("Gen", "Ruth", "Esth", "Jonah", "Matt", "Mark", "Luke", "John", "Acts")
PROSE_VAL_BOOKS = ("Ruth", "Jonah", "John")
PROSE_NOTE = "derived from the public-domain World English Bible (Debian package sword-text-web 426.0-1)"


def cache_dir() -> Path:
    """`<repo>/.cache` in a source checkout (git-ignored, travels with the tree), else `~/.cache/duollm`."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists():
        return root / ".cache"
    return Path.home() / ".cache" / "duollm"


# ----------------------------------------------------------------------------- SWORD zText


def read_ztext(module_dir: Path, testament: str) -> list[str]:
    """Every entry of one testament (`"ot"` or `"nt"`) of a zText module, as raw OSIS strings (the reader
    of zText and zCom modules in data/extract.py)."""
    return extract.read_zmodule(module_dir, testament)


_CHAPTER = re.compile(r'<chapter\b[^>]*\bosisID="([A-Za-z0-9]+)\.(\d+)"')
_NOTE_GAP = re.compile(r"<note\b[^>]*>.*?</note>(?=<w\b)", re.S)  # a note standing where a space was
_DROP = re.compile(r"<(note|title)\b[^>]*>.*?</\1>", re.S)  # footnotes and section headings
_TAG = re.compile(r"<[^>]+>")


def osis_to_text(osis: str) -> str:
    """Plain text of one verse: notes and titles dropped, tags stripped, whitespace folded."""
    text = _TAG.sub("", _DROP.sub("", _NOTE_GAP.sub(" ", osis)))
    return " ".join(html.unescape(text).split())


def verses_by_book(entries: list[str]) -> dict[str, list[str]]:
    """Group a testament's entries into books of plain-text verses, using the chapter introduction entries."""
    starts = [(i, m.group(1), int(m.group(2))) for i, e in enumerate(entries) if (m := _CHAPTER.search(e))]
    books: dict[str, list[str]] = {}
    for j, (i, book, _) in enumerate(starts):
        end = starts[j + 1][0] if j + 1 < len(starts) else len(entries)
        if j + 1 < len(starts) and starts[j + 1][2] == 1:
            end -= 1  # the entry before a book's first chapter is that book's introduction
        for e in entries[i + 1 : end]:
            if text := osis_to_text(e):
                books.setdefault(book, []).append(text)
    return books


# ----------------------------------------------------------------------------- fetching


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prose_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "prose"


def fetch_prose(cache: Path | None = None, deb: Path | None = None) -> Path:
    """Download (or take `deb`), verify, unpack and extract the prose corpus; return its folder.

    Writes `<cache>/prose/<Book>.txt` and `MANIFEST.json` into a temporary folder beside the cache, then renames
    it into place, so a failed fetch leaves any earlier corpus as it was.
    """
    out = prose_dir(cache)
    with tempfile.TemporaryDirectory(prefix="duollm-fetch-") as tmp:
        tmp = Path(tmp)
        if deb is None:
            cmd = ["apt-get", "download", f"{PROSE_PACKAGE}={PROSE_VERSION}"]
            try:
                r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            except FileNotFoundError:
                raise DuoError("apt-get not found: fetching the prose corpus needs Debian's package tools") from None
            debs = list(tmp.glob("*.deb"))
            if r.returncode or not debs:
                last = (r.stderr.strip().splitlines() or ["no output"])[-1]
                raise DuoError(
                    f"could not download {PROSE_PACKAGE} {PROSE_VERSION} with apt-get ({last}); run 'apt-get update' or check the network"
                )
            deb = debs[0]
        digest = sha256_file(deb)
        if digest != PROSE_SHA256:
            raise DuoError(f"{deb.name} has sha256 {digest}, expected {PROSE_SHA256}")
        r = subprocess.run(["dpkg", "-x", str(deb), str(tmp / "x")], capture_output=True, text=True)
        if r.returncode:
            raise DuoError(f"dpkg -x failed on {deb.name}: {r.stderr.strip()}")
        module = tmp / "x" / PROSE_MODULE
        books = verses_by_book(read_ztext(module, "ot")) | verses_by_book(read_ztext(module, "nt"))
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".prose-new-", dir=out.parent))  # same file system: renames are atomic
        try:
            write_books(stage, books, {"source": f"{PROSE_PACKAGE} {PROSE_VERSION}", "sha256": digest})
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        old = out.with_name(f".prose-old-{os.getpid()}")
        if out.exists():
            out.rename(old)
        stage.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    return out


def write_books(folder: Path, books: dict[str, list[str]], provenance: dict) -> None:
    """One file per narrative book, one verse per line, and a manifest with sizes and hashes."""
    missing = [b for b in PROSE_BOOKS if b not in books]
    if missing:
        raise DuoError(f"the SWORD module lacks the books {', '.join(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for b in PROSE_BOOKS:
        data = ("\n".join(books[b]) + "\n").encode("utf-8")
        (folder / f"{b}.txt").write_bytes(data)
        files[b] = {"verses": len(books[b]), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"note": PROSE_NOTE, **provenance, "books": files, "val_books": list(PROSE_VAL_BOOKS)}
    (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")


# ----------------------------------------------------------------------------- documents by split


def prose_documents(split: str, cache: Path | None = None) -> dict[str, str]:
    """`split` is "train" or "val": book id → text (verses joined by newlines)."""
    folder = prose_dir(cache)
    if not (folder / "MANIFEST.json").exists():
        raise DuoError(
            f"the prose corpus is not in {folder}; fetch it once with 'duollm data fetch' (it downloads Debian's {PROSE_PACKAGE} package)"
        )
    keep = [b for b in PROSE_BOOKS if (b in PROSE_VAL_BOOKS) == (split == "val")]
    return {b: (folder / f"{b}.txt").read_text("utf-8") for b in keep}


def stdlib_files() -> list[Path]:
    """Python files of the running interpreter's standard library, tests and vendored code left out, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "ensurepip", "lib2to3"}
    files = [p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_code_val(relpath: str) -> bool:
    """A stdlib file is held out when its path hashes into 1 of 10 buckets: stable across machines."""
    return zlib.crc32(relpath.encode()) % 10 == 0


def code_documents(split: str, max_bytes: int | None = None) -> dict[str, str]:
    """`split` is "train" or "val": stdlib relative path → source, up to `max_bytes` in total (sorted order)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, total = {}, 0
    for p in stdlib_files():
        rel = p.relative_to(root).as_posix()
        if is_code_val(rel) != (split == "val"):
            continue
        try:
            text = p.read_text("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if max_bytes is not None and total + len(text) > max_bytes:
            break
        docs[rel], total = text, total + len(text)
    return docs


@dataclass
class FetchCommand:
    """Fetch the built-in prose corpus: downloads Debian's sword-text-web package (about 4 MB) once."""

    deb: str = ""  # use this already downloaded .deb instead of apt-get download
    force: bool = False  # fetch again even when the cache holds the corpus
    json: bool = False  # print one JSON object instead of a line


def main(cmd: FetchCommand) -> None:
    folder = prose_dir()
    if cmd.force or not (folder / "MANIFEST.json").exists():
        if not cmd.json:
            print(f"fetching {PROSE_PACKAGE} {PROSE_VERSION} with apt-get download ...")
        fetch_prose(deb=Path(cmd.deb) if cmd.deb else None)
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    n = sum(b["bytes"] for b in manifest["books"].values())
    if cmd.json:
        print(json.dumps({"folder": str(folder), "bytes": n, "books": list(manifest["books"])}))
    else:
        print(f"prose corpus ready: {folder} ({n:,} bytes, {len(manifest['books'])} books; {PROSE_NOTE})")

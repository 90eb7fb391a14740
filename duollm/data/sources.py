"""The built-in corpora: where they come from, how they are fetched, and how they are split.

Prose: the narrative books of the World English Bible (public domain), from Debian's `sword-text-web`
package, one text file per book, one verse per line. They ship inside the package as `prose.tar.xz` (about
190 KB), so the default splits need no fetch step and no network. `fetch_prose` (`duollm data fetch`) rebuilds
that archive from the pinned package: it downloads it with `apt-get download` into a temporary folder, checks
its sha256, unpacks it with `dpkg -x` (no system install) and decodes the SWORD zText module; the archive it
writes is byte for byte the shipped one.

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
import io
import json
import lzma
import re
import shutil
import subprocess
import sysconfig
import tarfile
import tempfile
import zlib
from pathlib import Path

from duollm.data import extract
from duollm.errors import DuoError
from duollm.files import write_bytes

PROSE_PACKAGE = "sword-text-web"
PROSE_VERSION = "426.0-1"
PROSE_SHA256 = "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1"
PROSE_MODULE = "usr/share/sword/modules/texts/ztext/engWEB2015eb"
# OSIS book ids of the narrative books, in canonical order, and the books held out for validation.
PROSE_BOOKS = ("Gen", "Ruth", "Esth", "Jonah", "Matt", "Mark", "Luke", "John", "Acts")
PROSE_VAL_BOOKS = ("Ruth", "Jonah", "John")
PROSE_ARCHIVE = Path(__file__).with_name("prose.tar.xz")  # the books, shipped in the package (about 190 KB)
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


def debian_tools(download: bool, what: str, alternative: str) -> None:
    """Fail at once, in one line, when `dpkg` (and `apt-get`, when `download`) is not on PATH."""
    missing = [t for t in ("apt-get", "dpkg")[0 if download else 1 :] if shutil.which(t) is None]
    if missing:
        raise DuoError(f"{what} needs Debian's {' and '.join(missing)}, not found on PATH; {alternative}")


def download_deb(package: str, version: str, folder: Path, otherwise: str = "") -> Path:
    """`apt-get download PACKAGE=VERSION` into `folder`; the .deb (its sha256 is the caller's to check). A failure
    is one line, ending with `otherwise` (what else the user can do)."""
    folder.chmod(0o755)  # apt's unprivileged download user writes here
    try:
        r = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=folder, capture_output=True, text=True)
    except FileNotFoundError:
        raise DuoError(f"apt-get not found: fetching {package} needs Debian's package tools{otherwise}") from None
    debs = sorted(folder.glob("*.deb"))
    if r.returncode or not debs:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise DuoError(
            f"could not download {package} {version} with apt-get ({last}); run 'apt-get update' and check the network{otherwise}"
        )
    return debs[0]


def check_deb(deb: Path, sha256: str, what: str) -> str:
    """The .deb's sha256, when it is the pinned one."""
    digest = sha256_file(deb)
    if digest != sha256:
        raise DuoError(f"{deb.name} has sha256 {digest}, expected {sha256} (the pin of {what})")
    return digest


def unpack_deb(deb: Path, dest: Path) -> Path:
    """`dpkg -x DEB DEST`: the package's files under `dest`, nothing installed."""
    r = subprocess.run(["dpkg", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if r.returncode:
        raise DuoError(f"dpkg -x failed on {deb.name}: {r.stderr.strip()}")
    return dest


def fetch_prose(out: Path | None = None, deb: Path | None = None) -> Path:
    """Rebuild the prose archive from Debian's package: download it (or take `deb`), check its sha256, unpack it
    with `dpkg -x` into a temporary folder, decode the books and write them to `out` (default
    `<cache>/prose.tar.xz`). Returns `out`. A failure leaves any earlier `out` as it was."""
    out = Path(out) if out else cache_dir() / PROSE_ARCHIVE.name
    debian_tools(deb is None, "fetching the prose package", "the package ships the books already (duollm/data/prose.tar.xz)")
    with tempfile.TemporaryDirectory(prefix="duollm-fetch-") as tmp:
        tmp = Path(tmp)
        deb = deb if deb is not None else download_deb(PROSE_PACKAGE, PROSE_VERSION, tmp)
        digest = check_deb(deb, PROSE_SHA256, f"{PROSE_PACKAGE} {PROSE_VERSION}")
        module = unpack_deb(deb, tmp / "x") / PROSE_MODULE
        books = verses_by_book(read_ztext(module, "ot")) | verses_by_book(read_ztext(module, "nt"))
        write_archive(out, books, {"source": f"{PROSE_PACKAGE} {PROSE_VERSION}", "sha256": digest})
    return out


def write_archive(path: Path, books: dict[str, list[str]], provenance: dict) -> None:
    """The narrative books as an xz tar: `<Book>.txt` (one verse per line) and `MANIFEST.json` (sizes, sha256s).

    Byte for byte the same for the same books (and the same liblzma): members in a fixed order, no dates, owners
    or permissions of this machine. Written to a temporary name and renamed, so a reader never sees half an archive.
    """
    missing = [b for b in PROSE_BOOKS if b not in books]
    if missing:
        raise DuoError(f"the SWORD module lacks the books {', '.join(missing)}")
    files, meta = {}, {}
    for b in PROSE_BOOKS:
        files[f"{b}.txt"] = data = ("\n".join(books[b]) + "\n").encode("utf-8")
        meta[b] = {"verses": len(books[b]), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"note": PROSE_NOTE, **provenance, "books": meta, "val_books": list(PROSE_VAL_BOOKS)}
    files["MANIFEST.json"] = (json.dumps(manifest, indent=1) + "\n").encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    write_bytes(path, lzma.compress(raw.getvalue(), preset=9 | lzma.PRESET_EXTREME))


def read_archive(path: Path | None = None) -> dict[str, bytes]:
    """Member name → bytes of a prose archive (default: the one shipped in the package), every book checked
    against the sha256 of its manifest."""
    path = Path(path) if path else PROSE_ARCHIVE
    if not path.is_file():
        raise DuoError(f"the prose archive {path} is missing; reinstall duollm, or rebuild it with 'duollm data fetch --out {path}'")
    try:
        with tarfile.open(path, mode="r:xz") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        books = {b: json.loads(files["MANIFEST.json"])["books"][b]["sha256"] for b in PROSE_BOOKS}
    except (tarfile.TarError, lzma.LZMAError, EOFError, KeyError, TypeError, ValueError) as e:
        raise DuoError(f"{path} is not a prose archive of the books {', '.join(PROSE_BOOKS)} ({type(e).__name__}: {e})") from None
    for b, sha in books.items():
        if hashlib.sha256(files.get(f"{b}.txt", b"")).hexdigest() != sha:
            raise DuoError(f"{path}: {b}.txt does not match the sha256 of its manifest")
    return files


# ----------------------------------------------------------------------------- documents by split


def prose_documents(split: str, archive: Path | None = None) -> dict[str, str]:
    """`split` is "train" or "val": book id → text (verses joined by newlines), from the shipped archive."""
    files = read_archive(archive)
    keep = [b for b in PROSE_BOOKS if (b in PROSE_VAL_BOOKS) == (split == "val")]
    return {b: files[f"{b}.txt"].decode("utf-8") for b in keep}


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

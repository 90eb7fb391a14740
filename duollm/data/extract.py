"""Extractors for the training corpus: unpacked Debian package files → plain-text documents.

Each extractor is a pure function from file contents (bytes or str) to `{document name: text}`, so tests can
feed it tiny hand-made inputs. `study_sources.py` fetches the packages and calls them.

- SWORD zText/zCom modules (https://wiki.crosswire.org/DevTools:Modules): per testament, `.?zs` holds 12-byte
  records (offset, compressed size, size) of zlib blocks in `.?zz`; `.?zv` holds one record per entry in
  versification order: (block, offset, size) as u32, u32, u16 (zText/zCom: 10 bytes) or u32, u32, u32
  (zText4/zCom4: 12 bytes). The letter `?` is the block type (b = book, c = chapter, v = verse). A
  commentary entry that covers several verses is stored once and linked from each (same text).
- dictd databases (`gcide.dict.dz` is gzip; `gcide.index` lines are `headword TAB offset TAB length`, numbers
  in dictd's base64).
- WordNet 3.0 `data.*` files (wndb(5WN)): `offset lex_filenum ss_type w_cnt word lex_id ... | gloss`.
- Info files (texinfo output): nodes separated by `\\x1f`, each opening with a `File: ..., Node: ...` line.
- reStructuredText is kept as it is, with whitespace normalised.
"""

from __future__ import annotations

import gzip
import html
import re
import struct
import zlib
from pathlib import Path

from duollm.errors import DuoError

# ----------------------------------------------------------------------------- whitespace


def normalise(text: str, keep_indent: bool = True) -> str:
    """Trailing spaces dropped, tabs expanded, runs of blank lines folded to one, ends stripped.

    `keep_indent=False` also folds runs of spaces inside lines and drops indentation (for layout-only
    indentation, as in the dictionary); code and RST keep theirs.
    """
    lines = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = line.expandtabs(8).rstrip()
        if not keep_indent:
            line = " ".join(line.split())
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# ----------------------------------------------------------------------------- SWORD zText / zCom


def read_zmodule(module_dir: Path, testament: str) -> list[str]:
    """Every entry of one testament (`"ot"` or `"nt"`) of a zText or zCom module, as raw OSIS strings.

    The index record size (10 or 12 bytes) is the one under which every record points inside its block;
    `""` stands for an empty entry. A testament the module does not have gives `[]`.
    """
    d = Path(module_dir)
    found = sorted(d.glob(f"{testament}.?zs"))
    if not found:
        raise DuoError(f"SWORD module files {testament}.?zs/.?zz/.?zv missing in {d}")
    letter = found[0].name[len(testament) + 1]
    try:
        bzs, bzz, bzv = ((d / f"{testament}.{letter}z{ext}").read_bytes() for ext in "szv")
    except FileNotFoundError as e:
        raise DuoError(f"SWORD module file missing: {e.filename}") from None
    if not bzs:
        return []
    if len(bzs) % 12:
        raise DuoError(f"SWORD block index {testament}.{letter}zs in {d} is truncated")
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]  # (offset, csize, size)
    for rec, fmt in ((12, "<III"), (10, "<IIH")):
        if len(bzv) % rec:
            continue
        recs = [struct.unpack_from(fmt, bzv, i) for i in range(0, len(bzv), rec)]  # (block, offset, size)
        if all(s == 0 or (b < len(blocks) and o + s <= blocks[b][2]) for b, o, s in recs):
            break
    else:
        raise DuoError(f"SWORD entry index {testament}.{letter}zv in {d} is truncated or not zText/zCom")
    cache: dict[int, bytes] = {}
    entries = []
    for b, off, size in recs:
        if size == 0:
            entries.append("")
            continue
        if b not in cache:
            o, cs, _ = blocks[b]
            cache[b] = zlib.decompress(bzz[o : o + cs])
        entries.append(cache[b][off : off + size].decode("utf-8", errors="replace"))
    return entries


_CHAPTER = re.compile(r'<chapter\b[^>]*\bosisID="([A-Za-z0-9]+)\.(\d+)"')
_DROP = re.compile(r"<(note)\b[^>]*>.*?</\1>", re.S)  # footnotes
_BREAK = re.compile(r"<(?:div|p|lb|row|lg|l|item|list|title|/title|/p|/div|/row|/l|/item)\b[^>]*>")  # block-level tags
_TAG = re.compile(r"<[^>]+>")


def osis_paragraphs(osis: str) -> str:
    """Plain text of OSIS markup with paragraphs kept: notes dropped, block tags become line breaks."""
    text = _TAG.sub(" ", _BREAK.sub("\n", _DROP.sub(" ", osis)))
    lines = (" ".join(line.split()) for line in html.unescape(text).split("\n"))
    return "\n".join(line for line in lines if line)


def commentary_chapters(entries: list[str]) -> dict[str, str]:
    """A commentary's entries grouped by chapter (`"Gen.1"`): linked entries once, markup stripped."""
    docs: dict[str, list[str]] = {}
    key = "intro"  # entries before the first chapter (the module's own introduction)
    seen = set()
    for e in entries:
        if not e or e in seen:
            continue
        seen.add(e)
        for m in _CHAPTER.finditer(e):
            key = f"{m.group(1)}.{m.group(2)}"
        if text := osis_paragraphs(e):
            docs.setdefault(key, []).append(text)
    return {k: "\n".join(v) for k, v in docs.items()}


# ----------------------------------------------------------------------------- dictd (gcide)

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_SOURCE_TAG = re.compile(r"^\s*\[[^\]\n]{1,40}\]\s*$", re.M)  # a line holding only "[1913 Webster]", "[PJC]", ...
_PRONUNCIATION = re.compile(r" ?\\[^\\\n]{1,60}\\")  # "Affect \Af*fect"\, v. t." → "Affect, v. t."


def dictd_number(s: str) -> int:
    """A dictd index number (base64 digits, most significant first)."""
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def dictd_documents(dict_dz: bytes, index: str) -> dict[str, str]:
    """Entries of a dictd database grouped by the first two letters of their headword (`"af"`, `"ba"`, ...).

    `00-*` entries (the database's own headers and licence text) are dropped, as are lines holding only a
    source tag such as `[1913 Webster]`; pronunciations (`\\Af*fect"\\`) are dropped, `{cross references}` lose
    their braces and layout spaces are folded.
    """
    try:
        data = gzip.decompress(dict_dz)
    except (OSError, EOFError) as e:
        raise DuoError(f"the dictd database is not gzip data ({e})") from None
    spans = {}
    for line in index.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00"):
            continue
        span = (dictd_number(parts[1]), dictd_number(parts[2]))
        spans.setdefault(span, parts[0])  # an entry listed under several headwords counts once
    docs: dict[str, list[str]] = {}
    for (off, n), head in sorted(spans.items()):
        text = data[off : off + n].decode("utf-8", errors="replace")
        text = _PRONUNCIATION.sub("", _SOURCE_TAG.sub("", text)).replace("{", "").replace("}", "")
        text = normalise(text, keep_indent=False)
        if text:
            key = "".join(c if c.isascii() and c.isalpha() else "#" for c in head.lower()[:2])
            docs.setdefault(key, []).append(text)
    return {k: "\n\n".join(v) for k, v in docs.items()}


# ----------------------------------------------------------------------------- WordNet


def wordnet_documents(data_files: dict[str, str]) -> dict[str, str]:
    """Synsets of WordNet `data.<pos>` files as `words: gloss` lines, grouped by lexicographer file.

    `data_files` maps the part of speech (`noun`, `verb`, `adj`, `adv`) to the file's text; a document is
    one lexicographer file (`noun.05`), whose synsets share a topic. Licence lines (leading spaces) are skipped.
    """
    docs: dict[str, list[str]] = {}
    for pos, text in sorted(data_files.items()):
        for line in text.splitlines():
            if not line or line.startswith(" ") or "|" not in line:
                continue
            head, _, gloss = line.partition("|")
            f = head.split()
            if len(f) < 6:
                raise DuoError(f"unexpected WordNet data.{pos} line: {line[:60]!r}")
            n_words = int(f[3], 16)
            words = [re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in f[4 : 4 + 2 * n_words : 2]]
            gloss = " ".join(gloss.split())
            if gloss:
                docs.setdefault(f"{pos}.{int(f[1]):02d}", []).append(f"{', '.join(words)}: {gloss}")
    return {k: "\n".join(v) for k, v in docs.items()}


# ----------------------------------------------------------------------------- Info (texinfo)

_INDEX_MARK = re.compile("\x00\x08\\[[^\x00]*\x00\x08\\]")  # index entries hidden in the text
_MENU_ITEM = re.compile(r"^\* (?:Menu:|[^\n]*::[^\n]*|[^:\n]+: [^\n]*\.)\s*$", re.M)
_XREF = re.compile(r"\*[Nn]ote[ \n]+([^:]+?)::")  # *Note Name:: → Name
_XREF_LABEL = re.compile(r"\*[Nn]ote[ \n]+([^:]+?):[ \n]*[^.,;]*?[.,;]")  # *Note Label: Node. → Label


def info_documents(text: str) -> dict[str, str]:
    """The nodes of an Info file as documents named by node: header lines, menus, index marks and the tag
    table dropped, cross references reduced to their labels, control characters removed."""
    docs = {}
    for chunk in text.split("\x1f"):
        head, _, body = chunk.lstrip("\n").partition("\n")
        m = re.search(r"Node: ([^,\t\n]+)", head)
        if not head.startswith("File:") or m is None:
            continue  # the preamble, the tag table, indirect tables
        body = _INDEX_MARK.sub("", body)
        body = _MENU_ITEM.sub("", body)
        body = _XREF_LABEL.sub(r"\1", _XREF.sub(r"\1", body))
        body = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", body)
        if body := normalise(body):
            docs[m.group(1).strip()] = body
    return docs


# ----------------------------------------------------------------------------- code


def python_documents(root: Path) -> dict[str, str]:
    """Every `.py` file under a Python standard library folder (tests included, installed packages and caches
    left out), by relative path; files that are not UTF-8 text are skipped. Code is kept byte for byte."""
    skip = {"site-packages", "dist-packages", "__pycache__"}
    docs = {}
    for p in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        rel = p.relative_to(root)
        if skip.intersection(rel.parts) or not p.is_file():
            continue
        data = p.read_bytes()
        if b"\x00" in data:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if text.strip():
            docs[rel.as_posix()] = text
    return docs

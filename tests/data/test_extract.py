"""The corpus extractors on tiny hand-made inputs: SWORD zText/zCom, dictd, WordNet, Info, stdlib code.
Run: pytest tests/data/test_extract.py"""

import gzip
import struct
import zlib

import pytest

from duollm.data import extract
from duollm.errors import DuoError


def write_zmodule(folder, testament, entries, rec=10, letter="b", per_block=3):
    """Entries (OSIS strings; "" = empty; an int i = a link to entry i) as one SWORD testament."""
    fmt = "<IIH" if rec == 10 else "<III"
    bzs, bzz, index, where = bytearray(), bytearray(), [], {}
    for b0 in range(0, len(entries), per_block):
        raw = bytearray()
        for i, e in enumerate(entries[b0 : b0 + per_block], b0):
            if isinstance(e, int):  # a linked entry: same block, offset and size as entry e
                index.append(where[e])
                continue
            data = e.encode()
            where[i] = (len(bzs) // 12, len(raw), len(data)) if data else (0, 0, 0)
            index.append(where[i])
            raw += data
        comp = zlib.compress(bytes(raw))
        bzs += struct.pack("<III", len(bzz), len(comp), len(raw))
        bzz += comp
    bzv = b"".join(struct.pack(fmt, *r) for r in index)
    for ext, data in (("s", bzs), ("z", bzz), ("v", bzv)):
        (folder / f"{testament}.{letter}z{ext}").write_bytes(bytes(data))


COMMENTARY = [
    "",
    '<milestone type="x-importer"/>',
    '<chapter n="1" osisID="Ps.1" sID="Ps.1"/><title type="x-s">Psalm 1 OVERVIEW</title> <div sID="g1" type="x-p"/>'
    '<hi type="italic">Blessed</hi> is the &amp; man.<note n="a">a footnote</note><div eID="g1" type="x-p"/>',
    "<reference>Ps 1:2</reference> His delight.",
    3,  # verse 3 shares verse 2's commentary
    '<chapter eID="Ps.1"/><chapter n="2" osisID="Ps.2" sID="Ps.2"/>Why do the nations rage?',
]


@pytest.mark.parametrize("rec,letter", [(10, "b"), (12, "c")])
def test_zcom_both_index_sizes_links_once_by_chapter(tmp_path, rec, letter):
    write_zmodule(tmp_path, "ot", COMMENTARY, rec=rec, letter=letter)
    entries = extract.read_zmodule(tmp_path, "ot")
    assert len(entries) == len(COMMENTARY) and entries[3] == entries[4]
    docs = extract.commentary_chapters(entries)
    assert docs == {
        "Ps.1": "Psalm 1 OVERVIEW\nBlessed is the & man.\nPs 1:2 His delight.",
        "Ps.2": "Why do the nations rage?",
    }


def test_zmodule_errors_and_empty_testament(tmp_path):
    with pytest.raises(DuoError, match="missing"):
        extract.read_zmodule(tmp_path, "nt")
    for ext in "szv":
        (tmp_path / f"nt.cz{ext}").write_bytes(b"")
    assert extract.read_zmodule(tmp_path, "nt") == []  # an OT-only commentary
    write_zmodule(tmp_path, "ot", ["a", "b", "c", "d"])
    (tmp_path / "ot.bzv").write_bytes((tmp_path / "ot.bzv").read_bytes()[:-3])
    with pytest.raises(DuoError, match="truncated"):
        extract.read_zmodule(tmp_path, "ot")


def b64(n):
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    s = ""
    while True:
        s, n = digits[n % 64] + s, n // 64
        if n == 0:
            return s


def test_dictd_entries_headers_dropped_grouped_by_two_letters():
    entries = [
        ("00-database-short", "00-database-short\n   The Dictionary\n"),
        ("Afar", 'Afar \\A*far"\\, adv. [Pref. a- + far.]\n   At a great   distance; see {Far}.\n   [1913 Webster]\n'),
        ("Affect", "Affect, v. t.\n   To act upon.\n   [1913 Webster]\n\n         As might affect the earth. --Milton.\n   [PJC]\n"),
        ("Zeal", "Zeal, n.\n   Passionate ardor.\n"),
    ]
    data, index = b"", []
    for head, text in entries:
        raw = text.encode()
        index.append(f"{head}\t{b64(len(data))}\t{b64(len(raw))}")
        data += raw + b"\n"
    index.append(f"afar\t{b64(len(entries[0][1]) + 1)}\t{b64(len(entries[1][1]))}")  # a second headword, same entry
    docs = extract.dictd_documents(gzip.compress(data), "\n".join(index))
    assert docs == {
        "af": "Afar, adv. [Pref. a- + far.]\nAt a great distance; see Far.\n\nAffect, v. t.\nTo act upon.\n\nAs might affect the earth. --Milton.",
        "ze": "Zeal, n.\nPassionate ardor.",
    }
    assert extract.dictd_number("BJLt7") == ((1 * 64 + 9) * 64 + 11) * 64 * 64 + 45 * 64 + 59
    with pytest.raises(DuoError, match="gzip"):
        extract.dictd_documents(b"plain", "")


WORDNET_NOUN = """  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known  
02084071 05 n 02 dog 0 domestic_dog 0 001 @ 02083346 n 0000 | a member of the genus Canis; "the dog barked all night"  
"""
WORDNET_ADJ = "00001740 00 a 01 able(p) 0 001 ! 00002098 a 0101 | (usually followed by `to') having the means  \n"


def test_wordnet_glosses_by_lexicographer_file():
    docs = extract.wordnet_documents({"noun": WORDNET_NOUN, "adj": WORDNET_ADJ})
    assert docs == {
        "noun.03": "entity: that which is perceived or known",
        "noun.05": 'dog, domestic dog: a member of the genus Canis; "the dog barked all night"',
        "adj.00": "able: (usually followed by `to') having the means",
    }


INFO = (
    "This is python.info, produced by makeinfo.\n\n"
    "\x1f\nFile: python.info,  Node: Top,  Next: Intro,  Up: (dir)\n\nPython\n******\n\n"
    "* Menu:\n\n* Intro:: The introduction.\n* Library: Library<2>. The library.\n\n"
    "\x1f\nFile: python.info,  Node: Intro,  Prev: Top,  Up: Top\n\n1 Intro\n*******\n\n"
    "\x00\x08[index\x00\x08]Python is a language; see *note Library: Library<2>. for more,\n"
    "and *Note Top::.\n\n\n\n     print('hi')\t\n"
    "\x1f\nTag Table:\nNode: Top\x7f100\n\x1f\nEnd Tag Table\n"
)


def test_info_nodes_without_headers_menus_or_control_characters():
    docs = extract.info_documents(INFO)
    assert docs == {
        "Top": "Python\n******",
        "Intro": "1 Intro\n*******\n\nPython is a language; see Library for more,\nand Top.\n\n     print('hi')",
    }


def test_normalise_and_python_documents(tmp_path):
    assert extract.normalise("a  b \r\n\n\n\n\tc  \n") == "a  b\n\n        c"
    assert extract.normalise("  a   b \n   c", keep_indent=False) == "a b\nc"
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "other.py").write_text("y = 2\n")
    (tmp_path / "latin1.py").write_bytes(b"# \xe9\n")
    (tmp_path / "empty.py").write_text("\n")
    assert extract.python_documents(tmp_path) == {"pkg/mod.py": "x = 1\n"}

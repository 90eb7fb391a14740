"""The SWORD zText extractor on a module the test builds itself, the shipped prose archive, and the split rules.
Run: pytest tests/data/test_sources.py"""

import hashlib
import io
import json
import lzma
import shutil
import struct
import subprocess
import tarfile
import zlib

import pytest

from duollm.data import sources
from duollm.errors import DuoError


def write_ztext(folder, testament, entries, per_block=3):
    """Write entries (OSIS strings; "" = absent verse) as a SWORD zText testament: .bzs/.bzz/.bzv."""
    bzs, bzz, bzv = bytearray(), bytearray(), bytearray()
    for b0 in range(0, len(entries), per_block):
        chunk = entries[b0 : b0 + per_block]
        raw, offsets = bytearray(), []
        for e in chunk:
            data = e.encode()
            offsets.append((len(raw), len(data)))
            raw += data
        comp = zlib.compress(bytes(raw))
        block = len(bzs) // 12
        bzs += struct.pack("<III", len(bzz), len(comp), len(raw))
        bzz += comp
        for off, size in offsets:
            bzv += struct.pack("<IIH", block if size else 0, off if size else 0, size)
    for ext, data in (("bzs", bzs), ("bzz", bzz), ("bzv", bzv)):
        (folder / f"{testament}.{ext}").write_bytes(bytes(data))


def book(osis_id, chapters):
    """Entries of one book: introduction, then per chapter an introduction and its verses."""
    out = [f'<div osisID="{osis_id}" type="book"/><title>The Book of {osis_id}</title>']
    for c, verses in enumerate(chapters, 1):
        out.append(f'<chapter n="{c}" osisID="{osis_id}.{c}" sID="{osis_id}.{c}"/>')
        out += verses
    return out


def test_extracts_books_verses_and_strips_markup(tmp_path):
    entries = ["", '<milestone type="x-importer"/>']
    entries += book(
        "Gen",
        [
            ['<w lemma="H1">In</w> <w>the</w> beginning, <w>God</w><note placement="foot">1:1 a note</note><w>created</w> it.', ""],
            ["<title>Heading</title>Second &amp; last."],
        ],
    )
    entries += book("Ruth", [["Ruth <w>spoke</w>."]])
    write_ztext(tmp_path, "ot", entries)
    books = sources.verses_by_book(sources.read_ztext(tmp_path, "ot"))
    assert books == {"Gen": ["In the beginning, God created it.", "Second & last."], "Ruth": ["Ruth spoke."]}


def test_truncated_index_is_a_clear_error(tmp_path):
    write_ztext(tmp_path, "nt", book("Matt", [["x"]]))
    (tmp_path / "nt.bzv").write_bytes((tmp_path / "nt.bzv").read_bytes()[:-3])
    with pytest.raises(DuoError, match="truncated"):
        sources.read_ztext(tmp_path, "nt")
    with pytest.raises(DuoError, match="missing"):
        sources.read_ztext(tmp_path, "ot")


def test_archive_needs_every_book_reads_back_and_repeats_byte_for_byte(tmp_path):
    with pytest.raises(DuoError, match="lacks the books"):
        sources.write_archive(tmp_path / "p.tar.xz", {"Gen": ["x"]}, {})
    books = {b: [f"{b} verse one", "verse two"] for b in sources.PROSE_BOOKS}
    sources.write_archive(tmp_path / "p.tar.xz", books, {"source": "test"})
    docs = sources.prose_documents("val", archive=tmp_path / "p.tar.xz")
    assert sorted(docs) == sorted(sources.PROSE_VAL_BOOKS)
    assert docs["Ruth"] == "Ruth verse one\nverse two\n"
    assert not set(sources.prose_documents("train", archive=tmp_path / "p.tar.xz")) & set(sources.PROSE_VAL_BOOKS)
    sources.write_archive(tmp_path / "q.tar.xz", books, {"source": "test"})
    assert (tmp_path / "p.tar.xz").read_bytes() == (tmp_path / "q.tar.xz").read_bytes()  # no dates, owners, order


def test_shipped_books_are_complete_and_held_out_by_book():
    files = sources.read_archive()  # checks every book against its manifest's sha256
    assert sorted(files) == sorted([f"{b}.txt" for b in sources.PROSE_BOOKS] + ["MANIFEST.json"])
    val, train = sources.prose_documents("val"), sources.prose_documents("train")
    assert set(val) == set(sources.PROSE_VAL_BOOKS) and not set(val) & set(train) and len(train) == 6
    assert val["Ruth"].startswith("In the days when the judges judged")


def test_missing_or_corrupt_archive_is_a_clear_error(tmp_path):
    with pytest.raises(DuoError, match="duollm data fetch --out"):
        sources.prose_documents("train", archive=tmp_path / "absent.tar.xz")
    (tmp_path / "bad.tar.xz").write_bytes(b"not xz")
    with pytest.raises(DuoError, match="not a prose archive"):
        sources.read_archive(tmp_path / "bad.tar.xz")
    books = {b: ["a verse"] for b in sources.PROSE_BOOKS}
    sources.write_archive(tmp_path / "p.tar.xz", books, {})
    raw = lzma.decompress((tmp_path / "p.tar.xz").read_bytes()).replace(b"a verse", b"A verse")  # same size, other text
    (tmp_path / "p.tar.xz").write_bytes(lzma.compress(raw))
    with pytest.raises(DuoError, match="does not match the sha256"):
        sources.read_archive(tmp_path / "p.tar.xz")
    with tarfile.open(tmp_path / "short.tar.xz", "w:xz") as tar:  # a manifest without the other eight books
        data = json.dumps({"books": {"Gen": {"sha256": hashlib.sha256(b"x").hexdigest()}}}).encode()
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DuoError, match="not a prose archive of the books Gen, Ruth"):
        sources.read_archive(tmp_path / "short.tar.xz")


def test_without_debian_tools_fetch_and_build_fail_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg
    with pytest.raises(DuoError, match="needs Debian's apt-get and dpkg, not found on PATH"):
        sources.fetch_prose(tmp_path / "p.tar.xz")
    from duollm.cli.data import BuildCommand, main_build

    with pytest.raises(DuoError, match="--from-archive"):
        main_build(BuildCommand(out=str(tmp_path / "corpus")))
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs Debian's dpkg")
def test_wrong_package_hash_is_refused(tmp_path):
    deb = tmp_path / "fake.deb"
    deb.write_bytes(b"not the package")
    with pytest.raises(DuoError, match="sha256"):
        sources.fetch_prose(tmp_path / "p.tar.xz", deb=deb)
    assert not (tmp_path / "p.tar.xz").exists()  # nothing written


@pytest.mark.skipif(shutil.which("apt-get") is None or shutil.which("dpkg") is None, reason="needs Debian's apt-get and dpkg")
def test_shipped_archive_is_what_fetch_makes_from_the_pinned_package(tmp_path):
    try:
        out = sources.fetch_prose(tmp_path / "prose.tar.xz")  # downloads sword-text-web 426.0-1 (4 MB), checks its sha256
    except DuoError as e:
        if "could not download" in str(e):
            pytest.skip(f"no Debian package archive to download from: {e}")
        raise
    assert sources.read_archive(out) == sources.read_archive()


def test_code_split_is_by_file_and_disjoint():
    train, val = sources.code_documents("train", max_bytes=300_000), sources.code_documents("val", max_bytes=100_000)
    assert train and val and not set(train) & set(val)
    assert all(sources.is_code_val(p) for p in val)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb to build the fixture package")
def test_fetch_from_a_package_end_to_end(tmp_path, monkeypatch):
    """Build a .deb holding a small zText module, then fetch from it: unpack, verify, extract, write."""
    root = tmp_path / "pkg"
    module = root / sources.PROSE_MODULE
    module.mkdir(parents=True)
    ot = ["", ""] + [e for b in sources.PROSE_BOOKS[:4] for e in book(b, [[f"{b} one.", f"{b} two."]])]
    nt = ["", ""] + [e for b in sources.PROSE_BOOKS[4:] for e in book(b, [[f"{b} one."], [f"{b} again."]])]
    write_ztext(module, "ot", ot)
    write_ztext(module, "nt", nt)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text("Package: fixture\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n")
    deb = tmp_path / "fixture.deb"
    subprocess.run(["dpkg-deb", "-b", str(root), str(deb)], check=True, capture_output=True)
    monkeypatch.setattr(sources, "PROSE_SHA256", sources.sha256_file(deb))
    out = tmp_path / "prose.tar.xz"
    out.write_text("an older archive")
    assert sources.fetch_prose(out, deb=deb) == out
    docs = sources.prose_documents("train", archive=out) | sources.prose_documents("val", archive=out)
    assert docs["Gen"] == "Gen one.\nGen two.\n" and docs["Acts"] == "Acts one.\nActs again.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixture.deb", "pkg", "prose.tar.xz"]  # no temporary left

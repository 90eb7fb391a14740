"""The sources of the GPU study's corpus (`duollm data build`): seven Debian packages pinned by version and sha256,
and the standard library of the running interpreter, each with the extractor that turns its files into documents
(data/extract.py); fetching a package (`apt-get download`, or a folder of .deb files) and unpacking it with
`dpkg -x` into a temporary folder.
"""

from __future__ import annotations

import gzip
import platform
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from duollm.data import extract
from duollm.data.sources import check_deb, download_deb, unpack_deb, verses_by_book
from duollm.errors import DuoError


@dataclass(frozen=True)
class Source:
    """One source of documents: a pinned Debian package and the extractor for its files, or the stdlib."""

    name: str  # file and document prefix
    domain: str  # prose or code
    package: str  # Debian package; "" = the running interpreter's standard library
    version: str
    sha256: str  # of the .deb
    size: int  # bytes of the .deb
    extractor: str  # key of EXTRACTORS


# fmt: off
SOURCES = (
    Source("web", "prose", "sword-text-web", "426.0-1", "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1", 3956428, "bible"),
    Source("mhcc", "prose", "sword-comm-mhcc", "2.0-1", "06f748215de78ff48fdfdee93e3ffc5af6318b976485f7aedf22309236967e35", 1782348, "mhcc"),
    Source("tdavid", "prose", "sword-comm-tdavid", "2.1-1", "bcbfad701c5c4a061475b58309cebc42755a59e87478c8355227c5e046412b3f", 5148904, "tdavid"),
    Source("gcide", "prose", "dict-gcide", "0.48.5+nmu2", "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f", 14800692, "gcide"),
    Source("wordnet", "prose", "wordnet-base", "1:3.0-37", "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752", 6467132, "wordnet"),
    Source("pydoc", "prose", "python3.11-doc", "3.11.2-6+deb12u9", "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be", 12644000, "info"),
    Source("linux", "prose", "linux-doc-6.1", "6.1.192-3", "f18dfe28dcab7bdbf9185be16b9521f5841277a6a96c374a6683a648d5d5fa4f", 37346428, "rst"),
    Source("stdlib", "code", "", "", "", 0, "stdlib"),
)
# fmt: on


# ----------------------------------------------------------------------------- extractors (unpacked root → documents)


def _bible(root: Path) -> dict[str, str]:
    module = root / "usr/share/sword/modules/texts/ztext/engWEB2015eb"
    books = verses_by_book(extract.read_zmodule(module, "ot")) | verses_by_book(extract.read_zmodule(module, "nt"))
    return {b: "\n".join(v) for b, v in books.items()}


def _commentary(name: str) -> Callable[[Path], dict[str, str]]:
    def run(root: Path) -> dict[str, str]:
        module = root / "usr/share/sword/modules/comments/zcom" / name
        return extract.commentary_chapters(extract.read_zmodule(module, "ot") + extract.read_zmodule(module, "nt"))

    return run


def _gcide(root: Path) -> dict[str, str]:
    d = root / "usr/share/dictd"
    return extract.dictd_documents((d / "gcide.dict.dz").read_bytes(), (d / "gcide.index").read_text("utf-8", errors="replace"))


def _wordnet(root: Path) -> dict[str, str]:
    d = root / "usr/share/wordnet"
    return extract.wordnet_documents(
        {pos: (d / f"data.{pos}").read_text("utf-8", errors="replace") for pos in ("noun", "verb", "adj", "adv")}
    )


def _info(root: Path) -> dict[str, str]:
    return extract.info_documents(
        gzip.decompress((root / "usr/share/info/python3.11.info.gz").read_bytes()).decode("utf-8", errors="replace")
    )


def _rst(root: Path) -> dict[str, str]:
    """The kernel's RST documentation, translations left out, one document per file."""
    d = root / "usr/share/doc/linux-doc-6.1/Documentation"
    docs = {}
    for p in sorted(d.rglob("*.rst.gz")):
        rel = p.relative_to(d).as_posix()
        if rel.startswith("translations/"):
            continue
        if text := extract.normalise(gzip.decompress(p.read_bytes()).decode("utf-8", errors="replace")):
            docs[rel[: -len(".gz")]] = text
    return docs


def _stdlib(root: Path) -> dict[str, str]:
    return extract.python_documents(Path(sysconfig.get_paths()["stdlib"]))


EXTRACTORS = {
    "bible": _bible,
    "mhcc": _commentary("mhcc"),
    "tdavid": _commentary("tdavid"),
    "gcide": _gcide,
    "wordnet": _wordnet,
    "info": _info,
    "rst": _rst,
    "stdlib": _stdlib,
}


# ----------------------------------------------------------------------------- fetching


def source_version(s: Source) -> str:
    """The pinned package version, or the interpreter's version for the standard library."""
    return s.version if s.package else f"python {platform.python_version()}"


def fetch_deb(s: Source, folder: Path, debs: Path | None = None) -> Path:
    """The source's .deb in `folder`: taken from `debs` when given, else `apt-get download`; sha256 checked."""
    if debs is not None:
        found = sorted(debs.glob(f"{s.package}_*.deb"))
        if not found:
            raise DuoError(f"no {s.package}_*.deb in {debs}")
        deb = found[-1]
    else:
        deb = download_deb(s.package, s.version, folder, otherwise=", or pass --debs DIR or --from-archive FILE")
    check_deb(deb, s.sha256, f"{s.package} {s.version}")
    return deb


def extract_source(s: Source, debs: Path | None = None) -> dict[str, str]:
    """Fetch, check and unpack a source's package into a temporary folder and return its documents."""
    if not s.package:
        return EXTRACTORS[s.extractor](Path("/"))
    with tempfile.TemporaryDirectory(prefix="duollm-build-") as tmp:
        tmp = Path(tmp)
        docs = EXTRACTORS[s.extractor](unpack_deb(fetch_deb(s, tmp, debs), tmp / "x"))
    if not docs:
        raise DuoError(f"{s.package} {s.version} gave no documents")
    return docs

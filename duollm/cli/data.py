"""`duollm data fetch` (the built-in prose archive, rebuilt) and `duollm data build` (the study's offline corpus)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from duollm.data.build import build, summary, unpack_archive
from duollm.data.sources import (
    PROSE_ARCHIVE,
    PROSE_BOOKS,
    PROSE_NOTE,
    PROSE_PACKAGE,
    PROSE_VERSION,
    cache_dir,
    debian_tools,
    fetch_prose,
    read_archive,
)
from duollm.data.study_sources import SOURCES, extract_source
from duollm.flags import Range


@dataclass
class FetchCommand:
    """Rebuild the built-in prose archive from Debian's sword-text-web package (about 4 MB) and compare it with the shipped one."""

    out: str = ""  # the archive to write; "" = <cache>/prose.tar.xz (with --force, duollm/data/prose.tar.xz replaces the shipped one)
    deb: str = ""  # use this already downloaded .deb instead of apt-get download
    force: bool = False  # fetch again even when --out exists already
    json: bool = False  # print one JSON object instead of a line


@dataclass
class BuildCommand:
    """Build the offline training corpus: seven Debian packages (about 82 MB, downloaded once) and the stdlib."""

    out: str = ""  # output folder; "" = <repo>/.cache/corpus (git-ignored)
    vocab: Annotated[int, Range(1024, 65536)] = 16384  # BPE vocabulary size (16384 to 32768 for the study)
    archive: str = ""  # the xz archive to write; "" = <out>.tar.xz
    from_archive: str = ""  # unpack this archive (from an earlier build) into --out instead of building; no network
    debs: str = ""  # take the .deb files from this folder instead of apt-get download
    json: bool = False  # print one JSON object instead of the summary


def main_fetch(cmd: FetchCommand) -> None:
    out = Path(cmd.out) if cmd.out else cache_dir() / PROSE_ARCHIVE.name
    shipped = read_archive() if PROSE_ARCHIVE.is_file() else None  # read first: --out may be the shipped file itself
    if cmd.force or not out.exists():
        if not cmd.json:
            print(f"fetching {PROSE_PACKAGE} {PROSE_VERSION} with apt-get download ...")
        fetch_prose(out, deb=Path(cmd.deb) if cmd.deb else None)
    files = read_archive(out)
    same = files == shipped
    n = sum(len(files[f"{b}.txt"]) for b in PROSE_BOOKS)
    if cmd.json:
        print(json.dumps({"archive": str(out), "bytes": n, "books": list(PROSE_BOOKS), "same_as_shipped": same}))
        return
    print(f"prose archive: {out} ({n:,} bytes of text, {len(PROSE_BOOKS)} books; {PROSE_NOTE})")
    print(f"its books {'equal' if same else 'DIFFER from'} those of the package's {PROSE_ARCHIVE} (as it was before this command)")


def main_build(cmd: BuildCommand) -> None:
    out = Path(cmd.out) if cmd.out else cache_dir() / "corpus"
    log = (lambda _: None) if cmd.json else print
    if cmd.from_archive:
        t0 = time.perf_counter()
        manifest = unpack_archive(Path(cmd.from_archive), out)
        res = {"out": str(out), **summary(manifest), "seconds": round(time.perf_counter() - t0, 1)}
    else:
        debian_tools(
            not cmd.debs, "duollm data build", "on such a machine unpack a corpus built elsewhere: duollm data build --from-archive FILE"
        )
        archive = Path(cmd.archive) if cmd.archive else out.with_name(out.name + ".tar.xz")
        debs = Path(cmd.debs) if cmd.debs else None
        manifest = build(out, cmd.vocab, archive, SOURCES, lambda s: extract_source(s, debs), log)
        res = {"out": str(out), **summary(manifest), "seconds": round(manifest["seconds"], 1)}
    if cmd.json:
        print(json.dumps(res))
        return
    for d, t in res["totals"].items():
        print(f"{d}: {t['documents']:,} documents, {t['bytes'] / 1e6:.1f} MB, {t['tokens']:,} tokens")
    if res["archive"]:
        print(f"archive: {res['archive']['file']} ({res['archive']['bytes'] / 2**20:.1f} MiB)")
    print(f"corpus ready in {out} ({res['seconds']:.0f} s); train on it with")
    print(
        f"  duollm train --data {out} --data.val={out / 'prose-val.jsonl'} --data.tokenizer={out / 'tokenizer.json'} --model.vocab_size={res['vocab_size']} ..."
    )

"""Files and folders written so that a reader never sees half of one. Every write goes to a temporary name beside
its target and is renamed onto it at the end (atomic on one file system); a failure removes the temporary and
leaves the old file or folder as it was.

    write_json(run / "config.json", cfg)              # text, bytes or JSON in one call
    with atomic_path(path) as tmp:                    # anything that writes a file by name
        save_file(tensors, tmp)
    with atomic_folder(run / "report") as tmp:        # a whole folder, swapped in for the old one
        (tmp / "report.html").write_text(html)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from duollm.errors import DuoError


def temp_name(path: Path) -> Path:
    """`.NAME.tmpPID` beside `path`: hidden, and one per process."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write `path` under; renamed onto `path` when the block ends, removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj, indent: int | None = 1, ensure_ascii: bool = True) -> None:
    """`obj` as JSON and a final newline."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii) + "\n")


@contextmanager
def atomic_folder(folder: Path, fresh: bool = False) -> Iterator[Path]:
    """A temporary folder to fill; when the block ends it replaces `folder` (the old one is removed), and if the
    block raises it is removed. `fresh`: refuse, before anything, a `folder` that exists and is not empty."""
    folder = Path(folder)
    if fresh and folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DuoError(f"{folder} already exists and is not an empty folder; choose another or remove it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # fixed names, not one per process: what a killed run left behind is cleared by the next one
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if folder.exists():
            folder.replace(old)
        try:
            tmp.replace(folder)
        except BaseException:
            if old.exists() and not folder.exists():
                old.replace(folder)  # the swap failed: the old folder comes back
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""Reading a corpus that `duollm data build` wrote: its four splits, one JSON document per line. Training and
evaluation need only this, not the builder."""

from __future__ import annotations

import json
from pathlib import Path

from duollm.errors import DuoError

SPLITS = ("prose-train", "prose-val", "code-train", "code-val")
TRAIN_SPLITS = ("prose-train", "code-train")


def read_jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def read_split(folder: Path, split: str) -> dict[str, str]:
    """`source/doc` → text of one split of a built corpus."""
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise DuoError(f"{path} not found: build the corpus with 'duollm data build' or unpack it with --from-archive")
    return {f"{r['source']}/{r['doc']}": r["text"] for r in read_jsonl(path)}


def is_built_corpus(path: Path) -> bool:
    """A folder that `duollm data build` made (its MANIFEST.json says so)."""
    m = Path(path) / "MANIFEST.json"
    if not (Path(path).is_dir() and m.is_file()):
        return False
    try:
        return json.loads(m.read_text()).get("kind") == "duollm-corpus"
    except (json.JSONDecodeError, OSError):
        return False

"""Text → token shards on disk (numpy memmaps) → batches drawn with an explicit `torch.Generator`.

A *source* names text: a built-in split (`prose`, `prose-val`, `code`, `code-val`, `mix` = prose + code,
`synthetic`, `synthetic-val` = generated sentences for tests, no download) or a
user's path: a corpus folder made by `duollm data build` (its train splits, prose and code; its held-out
splits are the `.jsonl` files in it), a text file (one document), a folder (every `.txt`, `.md`, `.py`, `.rst`
file under it is a document) or a `.jsonl` file (one document per line, in its `"text"` field). Documents are joined with the
tokenizer's end-of-document id and stored as a flat uint16/uint32 array in the cache, keyed by the hash of
the text and the tokenizer, so each source is tokenized once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from duollm.data import built, sources
from duollm.data.synthetic import synthetic_documents
from duollm.data.tokenizer import Tokenizer
from duollm.errors import DuoError
from duollm.files import atomic_path

TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst")
CODE_TRAIN_BYTES = 4_000_000  # stdlib code used for training by default (about 1M tokens)


@dataclass
class DataConfig:
    """Where training and validation text come from, and how it is tokenized."""

    train: str = "prose"  # built-in source (prose, code, mix) or a path: text file, folder, .jsonl
    val: str = "prose-val"  # held-out source for the eval logged during training
    tokenizer: str = "builtin"  # builtin, bytes, or a path to a tokenizer.json


# ----------------------------------------------------------------------------- reading text


def read_text_file(path: Path) -> str:
    """A UTF-8 text file, or a clear error for a binary or undecodable one."""
    data = path.read_bytes()
    if b"\x00" in data[:65536]:
        raise DuoError(f"{path} looks binary (it holds NUL bytes); pass a UTF-8 text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DuoError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from None


def user_documents(path: Path) -> dict[str, str]:
    """Documents of a user's file, folder or JSONL; raises DuoError when missing, empty or binary."""
    if not path.exists():
        raise DuoError(f"data path not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        docs = {p.relative_to(path).as_posix(): read_text_file(p) for p in files}
    elif path.suffix == ".jsonl":
        docs = {}
        for i, line in enumerate(read_text_file(path).splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DuoError(f"{path}:{i + 1} is not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise DuoError(f'{path}:{i + 1} has no string field "text"')
            docs[f"line{i + 1}"] = rec["text"]
    else:
        docs = {path.name: read_text_file(path)}
    docs = {k: v for k, v in docs.items() if v.strip()}
    if not docs:
        raise DuoError(f"no text found in {path}" + (f" (looked for {', '.join(TEXT_SUFFIXES)} files)" if path.is_dir() else ""))
    return docs


def documents(source: str) -> dict[str, str]:
    """Name → text for a built-in split or a user's path."""
    if source in ("prose", "prose-val"):
        return sources.prose_documents("val" if source.endswith("-val") else "train")
    if source == "code":
        return sources.code_documents("train", max_bytes=CODE_TRAIN_BYTES)
    if source == "code-val":
        return sources.code_documents("val", max_bytes=CODE_TRAIN_BYTES // 9)
    if source in ("synthetic", "synthetic-val"):
        return synthetic_documents(n_docs=40 if source.endswith("-val") else 400, seed=1 if source.endswith("-val") else 0)
    if source == "mix":
        return documents("prose") | documents("code")
    if built.is_built_corpus(Path(source)):
        return {k: v for split in built.TRAIN_SPLITS for k, v in built.read_split(Path(source), split).items()}
    return user_documents(Path(source))


# ----------------------------------------------------------------------------- token shards


def token_array(source: str, tok: Tokenizer, cache: Path | None = None) -> np.ndarray:
    """The source's tokens as a read-only memmap (documents joined by `tok.eos_id`), built once and cached."""
    docs = documents(source)
    h = hashlib.sha256(tok.name.encode() + str(tok.vocab_size).encode())
    for name, text in docs.items():
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    folder = (cache or sources.cache_dir()) / "tokens"
    path = folder / f"{Path(source).name}-{h.hexdigest()[:16]}.{np.dtype(dtype).name}"
    if not path.exists():
        ids = tok.encode_batch(list(docs.values()))
        flat = np.fromiter((i for doc in ids for i in (*doc, tok.eos_id)), dtype=dtype)
        with atomic_path(path) as tmp:  # a reader never sees half a shard
            flat.tofile(tmp)
    return np.memmap(path, dtype=dtype, mode="r")


def sample_batch(tokens: np.ndarray, batch_size: int, seq_len: int, gen: torch.Generator) -> Tensor:
    """`batch_size` random windows of `seq_len` tokens, (B, T) int64, positions drawn from `gen`."""
    n = len(tokens) - seq_len
    if n <= 0:
        raise DuoError(f"the data holds {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}")
    starts = torch.randint(0, n + 1, (batch_size,), generator=gen)  # (B,)
    rows = [torch.from_numpy(tokens[s : s + seq_len].astype(np.int64)) for s in starts.tolist()]
    return torch.stack(rows)  # (B, T)


def seeded_windows(tokens: np.ndarray, n: int, seq_len: int, seed: int) -> Tensor:
    """`n` random windows of `seq_len` tokens, (n, T) int64, the same for the same seed (`sample_batch` from a fresh
    generator): the windows routers train, label and calibrate on."""
    return sample_batch(tokens, n, seq_len, torch.Generator().manual_seed(seed))  # (n, T)


def eval_windows(tokens: np.ndarray, seq_len: int, max_tokens: int | None = None) -> Tensor:
    """Consecutive non-overlapping windows of `seq_len` tokens covering the data, (N, T) int64.

    Each window predicts its last T-1 tokens from the ones before them; the tail shorter than a window is
    dropped. `max_tokens` caps the tokens read (the first windows are kept).
    """
    if seq_len < 2:
        raise DuoError(f"a window of {seq_len} token(s) predicts nothing: --seq-len takes 2 or more (0 = the run's)")
    n = len(tokens) if max_tokens is None else min(len(tokens), max_tokens)
    N = n // seq_len
    if N == 0:
        held = f"{len(tokens)} tokens" + (f" (--max-tokens {max_tokens})" if max_tokens is not None and max_tokens < len(tokens) else "")
        raise DuoError(f"the evaluation data holds {held}, fewer than one sequence of {seq_len}")
    return torch.from_numpy(tokens[: N * seq_len].astype(np.int64)).view(N, seq_len)  # (N, T)


PICKS = ("first", "spread")


def pick_windows(windows: Tensor, n: int, how: str = "first") -> Tensor:
    """`n` of the windows (N, T): the first n, or n spread evenly over all of them ("spread": in a split whose
    documents come grouped by source, the first windows are one source's, the spread ones every source's)."""
    if how not in PICKS:
        raise DuoError(f"--pick must be one of {', '.join(PICKS)}, got {how!r}")
    n = min(n, len(windows))
    return windows[:n] if how == "first" or n == 0 else windows[torch.arange(n) * len(windows) // n]

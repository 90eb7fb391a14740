"""Tokenizers: the built-in byte-level BPE (HF `tokenizers`), a user's `tokenizer.json`, and a 256-byte one.

The built-in BPE (`duollm/data/tokenizer.json`, 4096 entries) is this project's own artifact, trained by
`scripts/train_tokenizer.py` on the training splits of the built-in prose and code. `<|endoftext|>` (id 0)
separates documents. The byte tokenizer needs no library and serves unit tests: ids 0..255 are bytes and
256 is the end of a document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from duollm.errors import DuoError

BUILTIN = Path(__file__).with_name("tokenizer.json")
EOS = "<|endoftext|>"


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int
    name: str

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...
    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 0..255, and 256 = end of document."""

    vocab_size = 257
    eos_id = 256
    name = "bytes"

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """A `tokenizer.json` loaded with HF `tokenizers`; documents end with `<|endoftext|>`."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as HFTokenizer  # on use: `import duollm` stays torch-only

        try:
            self.tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception subclasses with long messages
            raise DuoError(f"cannot load tokenizer {path}: {str(e).splitlines()[0]}") from None
        eos = self.tok.token_to_id(EOS)
        if eos is None and (named := config_eos(Path(path))) is not None:  # a pretrained model's own end-of-text token
            eos = self.tok.token_to_id(named)
        if eos is None:
            raise DuoError(
                f"tokenizer {path} has no {EOS} token (nor an eos_token in a tokenizer_config.json beside it) to end documents with"
            )
        self.vocab_size, self.eos_id, self.name = self.tok.get_vocab_size(), eos, str(path)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)


def config_eos(path: Path) -> str | None:
    """The `eos_token` of the `tokenizer_config.json` beside a `tokenizer.json` (transformers' layout), if any."""
    cfg = path.with_name("tokenizer_config.json")
    try:
        eos = json.loads(cfg.read_text()).get("eos_token") if cfg.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return eos.get("content") if isinstance(eos, dict) else eos if isinstance(eos, str) else None


def load_tokenizer(spec: str) -> Tokenizer:
    """`"builtin"` (the committed BPE), `"bytes"`, or a path to a `tokenizer.json`."""
    if spec == "bytes":
        return ByteTokenizer()
    path = BUILTIN if spec == "builtin" else Path(spec)
    if not path.is_file():
        raise DuoError(f"tokenizer file not found: {path}")
    tok = BPETokenizer(path)
    if spec == "builtin":
        tok.name = "builtin"
    return tok


def train_bpe(texts: list[str], vocab_size: int, out: Path) -> None:
    """Train a byte-level BPE on `texts` and save it as `out` (a `tokenizer.json`)."""
    from tokenizers import Tokenizer as HFTokenizer  # on use: `import duollm` stays torch-only
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(out))

"""A run's tokenizer as a transformers `PreTrainedTokenizerFast`, saved beside the weights.

The built-in BPE and a user's `tokenizer.json` are HF `tokenizers` files already: they are wrapped as they
are, with `<|endoftext|>` as the end-of-text (and padding) token and no tokens added around the text, so
`tokenizer(text).input_ids` equals duollm's `encode_batch([text])[0]`. The byte tokenizer of the `debug`
preset (ids 0..255 are bytes, 256 ends a document) is rebuilt as a byte-level BPE without merges whose
vocabulary maps each byte's GPT-2 character to the byte's value, so it too gives the same ids.
"""

from __future__ import annotations

from duollm.data.tokenizer import BUILTIN, EOS


def byte_to_char() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (what ByteLevel produces)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:  # control bytes and spaces move past 255
            out[b], extra = chr(256 + extra), extra + 1
    return out


def byte_tokenizer():
    """duollm's ByteTokenizer as an HF `tokenizers.Tokenizer`: byte b → id b, `<|endoftext|>` → 256."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # on use: `import duollm` stays torch-only

    vocab = {c: b for b, c in byte_to_char().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])  # id 256, the next free one
    return tok


def hf_tokenizer(spec: str, max_len: int):
    """A `PreTrainedTokenizerFast` for a run's tokenizer spec (`builtin`, `bytes`, or a `tokenizer.json` path)."""
    from tokenizers import Tokenizer  # on use: `import duollm` stays torch-only
    from transformers import PreTrainedTokenizerFast  # the optional hf extra

    tok = byte_tokenizer() if spec == "bytes" else Tokenizer.from_file(str(BUILTIN if spec == "builtin" else spec))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, model_max_length=max_len, clean_up_tokenization_spaces=False
    )

"""Train the built-in byte-level BPE (duollm/data/tokenizer.json) on the built-in training splits.

Run once: `python scripts/train_tokenizer.py [--vocab 4096]`. The result is committed;
it depends only on the prose corpus and the standard library of the interpreter that ran this.
"""

import argparse
import random

from duollm.data.sources import code_documents, prose_documents
from duollm.data.tokenizer import BUILTIN, train_bpe

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--vocab", type=int, default=4096)
p.add_argument("--code-bytes", type=int, default=800_000, help="bytes of stdlib code mixed in (about as much as the prose)")
args = p.parse_args()
prose = list(prose_documents("train").values())
code = list(code_documents("train").values())
random.Random(0).shuffle(code)
picked, total = [], 0
for t in code:
    if total > args.code_bytes:
        break
    picked.append(t)
    total += len(t)
# train on lines, so that no single document dominates a batch of the trainer
lines = [ln for doc in prose + picked for ln in doc.splitlines(keepends=True)]
train_bpe(lines, args.vocab, BUILTIN)
print(f"wrote {BUILTIN} ({args.vocab} entries) from {len(prose)} prose books and {len(picked)} code files")

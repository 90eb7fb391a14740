"""Synthetic text for tests and smoke runs: needs no download, and has structure a model can learn.

Documents are sentences from a tiny grammar (subject, verb, object, with agreement between a subject and
its pronoun later in the sentence), so that the loss of a small model falls within a few dozen steps.
"""

from __future__ import annotations

import random

_NOUNS = {"he": ["king", "man", "shepherd", "servant", "son"], "she": ["queen", "woman", "widow", "daughter", "maid"]}
_VERBS = ["saw", "called", "followed", "blessed", "answered", "sent"]
_OBJECTS = ["the city", "the river", "the field", "the house", "the mountain", "the sea"]
_PLACES = ["at night", "in the morning", "by the gate", "near the well"]


def synthetic_documents(n_docs: int = 200, sentences: int = 12, seed: int = 0) -> dict[str, str]:
    """`n_docs` documents of `sentences` sentences each, deterministic in `seed`."""
    rng = random.Random(seed)
    docs = {}
    for d in range(n_docs):
        lines = []
        for _ in range(sentences):
            pron = rng.choice(["he", "she"])
            noun = rng.choice(_NOUNS[pron])
            lines.append(f"The {noun} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}, and {pron} rested.")
        docs[f"doc{d:04d}"] = "\n".join(lines) + "\n"
    return docs

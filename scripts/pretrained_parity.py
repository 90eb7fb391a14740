"""All-BIG perplexity of an imported run against transformers' own on the same windows (docs/pretrained.md).

    python scripts/pretrained_parity.py runs/smol --split prose-val --max-tokens 16384

Reloads the pretrained model the run was imported from (RUN/pretrained.json's source) with transformers, cuts the
split into the windows `duollm eval --run RUN --policy all-big` uses (the run's tokenizer and seq_len), and prints
both perplexities and the largest difference of their logits, fp32. Needs `duollm[pretrained]`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from duollm.data.corpus import eval_windows, token_array
from duollm.pretrained.sources import open_llama
from duollm.runs.load import load_run


def source_args(source: str) -> dict:
    kind, _, value = source.partition(":")
    return {"pretrained": {"pretrained": value}, "gguf": {"gguf": value}, "hf": {"hf": value}}[kind]


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--split", default="prose-val")
    ap.add_argument("--max-tokens", type=int, default=0, help="0 = the whole split")
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    run = Path(args.run)
    cfg, duo, tok = load_run(run)
    llama, _ = open_llama(**source_args(json.loads((run / "pretrained.json").read_text())["source"])).load()
    windows = eval_windows(token_array(args.split, tok), cfg.train.seq_len, args.max_tokens or None)  # (N, T)
    route = torch.full((cfg.model.n_layer,), 2, dtype=torch.uint8)  # all BIG
    nll = {"duollm": 0.0, "transformers": 0.0}
    worst = 0.0
    for i in range(0, len(windows), args.batch_size):
        ids = windows[i : i + args.batch_size]
        a, b = duo(ids, route=route).logits, llama(ids).logits
        worst = max(worst, (a - b).abs().max().item())
        for name, logits in (("duollm", a), ("transformers", b)):
            nll[name] += F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum").item()
    n = windows[:, 1:].numel()
    row = {"split": args.split, "windows": len(windows), "seq_len": cfg.train.seq_len, "tokens": n}
    row |= {f"ppl_{k}": round(math.exp(v / n), 4) for k, v in nll.items()} | {"max_abs_logit_diff": worst}
    print(json.dumps(row))


if __name__ == "__main__":
    main()

"""How the causal oracle's time grows with the batch of sequences (one process, random weights).

    python3 -m benchmarks.bench_causal --preset gpt2-124m --seq-len 512 --batches 8,32,128 --k 6

The causal oracle runs position by position, so at small batch it is bound by kernel launches; this measures
seconds per sequence as the batch grows, to plan full causal sweeps. bf16 autocast on a GPU.
"""

import argparse
import json

import torch

from benchmarks.timing import DEVICE, timed
from duollm.model.transformer import DuoLM
from duollm.oracle.causal import causal_search
from duollm.presets import model_config
from duollm.routing.budget import Budget

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="gpt2-124m")
p.add_argument("--seq-len", type=int, default=512)
p.add_argument("--batches", default="8,32,128")
p.add_argument("--k", type=int, default=6)
args = p.parse_args()

dev = DEVICE
cfg = model_config(args.preset)
torch.manual_seed(0)
model = DuoLM(cfg).to(dev).eval()
budget = Budget.exactly_big(args.k)
with torch.autocast("cuda", torch.bfloat16, enabled=dev == "cuda"):
    causal_search(model, torch.randint(0, cfg.vocab_size, (2, 8), device=dev), budget)  # warm-up
    for B in (int(b) for b in args.batches.split(",")):
        ids = torch.randint(0, cfg.vocab_size, (B, args.seq_len), generator=torch.Generator().manual_seed(B)).to(dev)
        s, _ = timed(lambda ids=ids: causal_search(model, ids, budget))
        print(
            json.dumps(
                {
                    "preset": args.preset,
                    "k": args.k,
                    "routes": len(budget.routes(cfg.n_layer)),
                    "batch": B,
                    "seq_len": args.seq_len,
                    "seconds": round(s, 1),
                    "s_per_seq": round(s / B, 3),
                }
            ),
            flush=True,
        )

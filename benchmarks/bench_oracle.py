"""Speed of the exhaustive shared-route oracle: the tree walk against one forward per route, in one process.

    python3 -m benchmarks.bench_oracle --preset gpt2-124m --seqs 256 --seq-len 512 [--out FILE.json]

1. Ratio: on `--ratio-seqs` sequences, the tree walk over the whole free route set (2^L routes) is timed,
   and so is the naive search (a plain forward + head per route) on `--naive-routes` routes drawn from the
   set, scaled to the whole set. Both use the same head (`oracle.loss.head_loss`) and bf16 autocast. The ideal
   ratio is the FLOP ratio from cost.py (`search.walk_flops`): the walk is held to ≥ 0.8 of it.
2. Sweep: the full 2^L sweep (exactly k BIG layers, k = 0..L, in one walk) on `--seqs` × `--seq-len`
   tokens: seconds, and achieved TFLOP/s against the counted FLOPs.
3. Causal: the causal oracle at k = L/2 on `--causal-seqs` sequences (seconds per sequence of T tokens).
Random weights: the speed of a search does not depend on them. Writes one JSON object with every number.
"""

import argparse
import datetime
import json

import torch

from benchmarks.timing import DEVICE, timed
from duollm.model.transformer import DuoLM
from duollm.oracle.causal import causal_search
from duollm.oracle.search import route_loss, search_many, walk_flops
from duollm.presets import model_config
from duollm.routing.budget import Budget

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="gpt2-124m")
p.add_argument("--seqs", type=int, default=256)
p.add_argument("--seq-len", type=int, default=512)
p.add_argument("--ratio-seqs", type=int, default=64)
p.add_argument("--naive-routes", type=int, default=256)
p.add_argument("--causal-seqs", type=int, default=8)
p.add_argument("--out", default="bench_oracle.json")
args = p.parse_args()

dev = DEVICE
cfg = model_config(args.preset)
torch.manual_seed(0)
model = DuoLM(cfg).to(dev).eval()
L, T = cfg.n_layer, args.seq_len
ids = torch.randint(0, cfg.vocab_size, (args.seqs, T), generator=torch.Generator().manual_seed(0)).to(dev)
table = cfg.cost(T)
auto = torch.autocast("cuda", torch.bfloat16, enabled=dev == "cuda")


def naive(x, route):
    """One plain forward with a static route, then the same head as the walk."""
    return route_loss(model, x, route)


free = Budget.free().routes(L)  # (2^L, L)
pick = torch.randperm(len(free), generator=torch.Generator().manual_seed(1))[: args.naive_routes]
sub = ids[: args.ratio_seqs]
res = {"preset": args.preset, "seq_len": T, "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__}
with auto:
    search_many(model, ids[:2, :T], [Budget.exactly_big(L)])  # warm-up: compile the head
    naive(ids[:2], free[0])
    t_tree, _ = timed(lambda: search_many(model, sub, [Budget.free()]))
    t_naive, _ = timed(lambda: [naive(sub, free[i]) for i in pick])
    tree_f, naive_all_f = walk_flops(free, table)
    naive_pick_f = walk_flops(free[pick], table)[1]
    t_naive_all = t_naive * len(free) / len(pick)
    ideal = naive_pick_f * len(free) / len(pick) / tree_f
    tok = sub[:, 1:].numel()
    res["ratio"] = {
        "seqs": len(sub),
        "routes": len(free),
        "tree_s": round(t_tree, 2),
        "naive_s_scaled": round(t_naive_all, 2),
        "naive_routes_timed": len(pick),
        "speedup": round(t_naive_all / t_tree, 3),
        "ideal": round(ideal, 3),
        "fraction_of_ideal": round(t_naive_all / t_tree / ideal, 3),
        "tree_tflops": round(tree_f * tok / t_tree / 1e12, 1),
        "naive_tflops": round(naive_pick_f * tok / t_naive / 1e12, 1),
    }
    print(json.dumps(res["ratio"]), flush=True)
    sweep = [Budget.exactly_big(k) for k in range(L + 1)]
    t_sweep, out = timed(lambda: search_many(model, ids, sweep))
    tok = ids[:, 1:].numel()
    res["sweep"] = {
        "seqs": args.seqs,
        "routes": sum(r.n_routes for r in out),
        "seconds": round(t_sweep, 1),
        "tflops": round(tree_f * tok / t_sweep / 1e12, 1),
        "ppl_oracle": [round(float(r.loss.double().mean().exp()), 2) for r in out],
    }
    print(json.dumps(res["sweep"]), flush=True)
    if args.causal_seqs:
        xs = ids[: args.causal_seqs]
        t_c, _ = timed(lambda: causal_search(model, xs, Budget.exactly_big(L // 2)))
        res["causal"] = {"seqs": len(xs), "k": L // 2, "routes": len(Budget.exactly_big(L // 2).routes(L)), "seconds": round(t_c, 1)}
        print(json.dumps(res["causal"]), flush=True)
res["date"] = datetime.date.today().isoformat()
with open(args.out, "w") as f:
    json.dump(res, f, indent=1)

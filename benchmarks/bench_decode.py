"""Decode throughput: tokens/s per batch size, routed against all-big, CUDA graphs against eager, and the
Hugging Face `LlamaForCausalLM` of the same dimensions, in one process.

    python3 -m benchmarks.bench_decode --preset paper-1.4b --batches 1,8,64,256 --new 64 --out decode.jsonl

Random weights (speed does not depend on them), bf16, a prompt of `--prompt-len` random tokens per sequence,
greedy decoding of `--new` tokens; new tokens per second with the prefill subtracted (a run of 1 new token is
timed and taken off). Implementations:
  graphs  `model/decode.py` `Decoder`: every step one CUDA graph replay (one graph per batch bucket),
  fast    the same with `fuse=True, compile=True`: one matmul for q/k/v and for gate/up (model/fuse.py), the step
          through torch.compile(fullgraph) before it is recorded, for the policies of `--fast-policies` (each
          decoder compiles its step once per batch: slow to start); with `--tune` also `+tuned`, compiled with
          Inductor's coordinate-descent tuning (batch 1's matrix-vector products as tuned reductions); with
          `--one-row`, at batch 1 also `+one-row`, every matrix product (q/k/v, o, gate/up, down, the head) through
          the one-row matrix-vector kernels of kernels/triton_decode.py (`Decoder(one_row=True)`; Triton), and
          with `--one-row-min N` also `+one-row-min`, where matrices of fewer than N elements stay with F.linear;
  eager   `model/decode.py` `generate`, the readable reference (launch-bound at small batch),
  hf      transformers' `generate` of a dense Llama with the all-big dimensions (tied head, SDPA, its default
          dynamic cache), for the same batches.
Policies: all-big; a static route with k of 12 layers BIG and the rest SMALL (the whole batch takes it, so a
step reads k big and 12 − k small modules); `random k/12`, each token and layer BIG with probability k/12 and
SMALL otherwise, decided on the device inside the graph (`random L/L [decode]`: every token BIG, through the decode
kernel, whose matrix-vector products then read what all-big's cuBLAS ones read), once per routed-FFN path of
`--ffn-kernels`: `masked`
(kernels/masked.py: both modules on every row, so both modules' weights read) and `decode` (kernels/triton_decode.py:
only the modules some row of the step chose; Triton). `--small-view` stores SMALL as BIG's first neurons
(`DuoConfig.small_view`), so that `decode` reads SMALL's weights as part of BIG's.

Ideals against all-big: `ideal_bytes`, the ratio of the weight bytes a step reads (attention, the modules the
route takes, the head; what bounds batch 1; for a random policy at batch B the modules that at least one of the B
rows chose, in expectation: at batch 64 nearly every module, SMALL's inside BIG's with --small-view); `ideal_bytes_kv`, the same with the KV cache a step reads added
(the whole buffer of `prompt_len + new` slots per sequence and layer, which the graph's masked attention
reads; it is not routed, and at large batch it outweighs the weights); `ideal_flops`, the ratio of counted
FLOPs per token at the final length (routing/cost.py). `hbm`: the bytes a step reads (the weights it needs, the
whole KV buffer) times steps per second, as a share of the H200's 4.8 TB/s (on an H200 only): how close a step
runs to the memory's limit.
"""

import argparse
import json
from contextlib import nullcontext

import torch

from benchmarks.timing import DEVICE, hf_llama, timed
from duollm import kernels
from duollm.model.decode import Decoder, generate
from duollm.model.fuse import fused
from duollm.model.transformer import DuoLM
from duollm.presets import model_config
from duollm.routing.cost import route_cost
from duollm.routing.route import Choice
from duollm.routing.sample import RandomRouter

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--preset", default="paper-1.4b")
p.add_argument("--batches", default="1,8,64,256")
p.add_argument("--prompt-len", type=int, default=128)
p.add_argument("--new", type=int, default=64)
p.add_argument("--ks", default="4,6,8")
p.add_argument("--eager-batches", default="1,64", help="batches at which the eager reference is also timed")
p.add_argument("--hf-batches", default="1,64", help="batches at which HF generate is timed ('' = none)")
p.add_argument("--profile", action="store_true", help="count the kernels of one step and their GPU time, batch 1")
p.add_argument(
    "--profile-batch", type=int, default=1, help="with --profile: the step's batch (above 1: the graphs' policies only, not fused)"
)
p.add_argument(
    "--ffn-kernels",
    default="masked,decode",
    help="routed-FFN paths of the random policies inside the graphs "
    "(masked, decode, decode-tiled: the decode kernel without its one-row matrix-vector path)",
)
p.add_argument("--small-view", action="store_true", help="SMALL as BIG's first neurons (DuoConfig.small_view)")
p.add_argument("--fast-policies", default="all-big,random 4/12 [decode]", help="policies also timed fused and compiled ('' = none)")
p.add_argument("--tune", action="store_true", help="the fast policies also compiled with coordinate-descent tuning (+tuned)")
p.add_argument(
    "--one-row",
    action="store_true",
    help="at batch 1 the fast policies also with every matrix product through the one-row kernels (+one-row)",
)
p.add_argument(
    "--one-row-min",
    type=int,
    default=0,
    help="with --one-row, also +one-row-min: matrices of fewer elements than this stay with F.linear (kernels.ONE_ROW_MIN)",
)
p.add_argument("--out", default="bench_decode.jsonl")
args = p.parse_args()

dev = DEVICE
dtype = torch.bfloat16 if dev == "cuda" else torch.float32
cfg = model_config(args.preset)
cfg.kernel = "grouped"  # per-token choices without host synchronisation (inside graphs it is used regardless)
cfg.small_view = args.small_view
torch.manual_seed(0)
model = DuoLM(cfg).to(dev, dtype).eval()
L, T_final = cfg.n_layer, args.prompt_len + args.new
table = cfg.cost(T_final)
batches = [int(b) for b in args.batches.split(",")]
ks = [int(k) for k in args.ks.split(",")]

static = {"all-big": torch.full((L,), Choice.BIG, dtype=torch.uint8)}
static.update({f"{k}/{L} big": torch.tensor([Choice.BIG] * k + [Choice.SMALL] * (L - k), dtype=torch.uint8) for k in ks})
policies = {name: {"route": r} for name, r in static.items()}
ffn_kernels = [k for k in args.ffn_kernels.split(",") if k]
for kern in ffn_kernels:  # BIG with probability k/L, else SMALL; decode-tiled: the decode kernel's tiled path at any rows
    extra = {"kernel": "decode", "one_row": False} if kern == "decode-tiled" else {"kernel": kern}
    policies.update({f"random {k}/{L} [{kern}]": {"router": RandomRouter((k / L, 1 - k / L, 0.0)), **extra} for k in ks})
if "decode" in ffn_kernels:  # every token BIG, chosen per token: the decode kernel's matmuls against cuBLAS's at equal bytes
    policies[f"random {L}/{L} [decode]"] = {"router": RandomRouter((1.0, 0.0, 0.0)), "kernel": "decode"}

attn_params = sum(p.numel() for n, p in model.blocks[0].named_parameters() if not n.startswith("ffn."))
module_params = {Choice.BIG: sum(p.numel() for p in model.blocks[0].ffn.big.parameters()), Choice.SKIP: 0}
module_params[Choice.SMALL] = 3 * cfg.d_model * cfg.d_small  # a SmallView owns no parameters, but its reads count
head_params = model.embed.weight.numel()


def step_bytes(name: str, B: int = 1) -> float:
    """Weight elements one step of B rows reads (expected value for a random policy: a module is read when at
    least one row chose it; with --small-view SMALL's weights are part of BIG's)."""
    if name.startswith("random"):
        f = int(name.split()[1].split("/")[0]) / L
        big, small = 1 - (1 - f) ** B, 1 - f**B  # P(some row chose BIG), P(some row chose SMALL)
        if "[masked]" in name:  # both modules run on every row, SMALL as matmuls of its own
            big = small = 1.0
        elif args.small_view:  # SMALL's weights read apart only when no row chose BIG (then every row chose SMALL)
            small = (1 - f) ** B
        return L * (attn_params + big * module_params[Choice.BIG] + small * module_params[Choice.SMALL]) + head_params
    return L * attn_params + sum(module_params[int(c)] for c in static[name]) + head_params


def step_flops(name: str) -> float:
    if name.startswith("random"):
        f = int(name.split()[1].split("/")[0]) / L
        return float(table.attn.sum() + table.head + f * table.ffn[:, Choice.BIG].sum() + (1 - f) * table.ffn[:, Choice.SMALL].sum())
    return float(route_cost(static[name], table))


def new_tokens_per_s(run, B: int) -> float:
    run(2)  # warm-up: the second token is the first decode step, which records the bucket's graph
    prefill, _ = timed(lambda: run(1))
    total, _ = timed(lambda: run(args.new))
    return B * (args.new - 1) / max(1e-9, total - prefill)


def record(rec: dict) -> None:
    rec.update(preset=args.preset, prompt_len=args.prompt_len, new=args.new, dtype=str(dtype).split(".")[-1])
    rec.update(device=torch.cuda.get_device_name() if dev == "cuda" else "cpu", torch=torch.__version__)
    rows.append(rec)
    print(json.dumps(rec), flush=True)


rows: list[dict] = []
if args.profile:  # what a step (batch 1, or --profile-batch) is made of: the same step as the graph, run eagerly and profiled
    from torch.profiler import ProfilerActivity, profile

    PB = args.profile_batch
    ids = torch.randint(0, cfg.vocab_size, (PB, args.prompt_len), device=dev)
    busy = (lambda e: e.self_device_time_total) if dev == "cuda" else (lambda e: e.self_cpu_time_total)  # a CPU: a check that it runs
    per_token = f"random {ks[0]}/{L} [decode]"  # the per-token route through the decode kernel, fused and compiled
    todo = [("all-big", False), (f"{ks[0]}/{L} big", False), ("all-big", True), (f"{ks[0]}/{L} big", True), (per_token, True)]
    todo += [("all-big", "one-row"), (per_token, "one-row")] if args.one_row else []
    if PB > 1:  # the fused and compiled step is for batch 1; above it, the graphs' step of each policy of the run
        todo = [(name, False) for name in policies]
    for name, fast in todo:
        if name not in policies:
            continue
        for blk in model.blocks:
            blk.ffn.kernel = policies[name].get("kernel", "grouped")
        opts = {"router": policies[name]["router"]} if "router" in policies[name] else {"route": static[name]}
        one_row = fast == "one-row"
        dec = Decoder(
            model, PB, T_final, graphs=False, fuse=bool(fast), compile=bool(fast), tune=fast is True and args.tune, one_row=one_row, **opts
        )
        dec.generate(ids, 2)
        with torch.no_grad(), fused(model, one_row) if fast else nullcontext():
            dec.step(PB)  # compiled (fast) before the profile
            with profile(activities=[ProfilerActivity.CUDA if dev == "cuda" else ProfilerActivity.CPU]) as prof:
                dec.step(PB)
                torch.cuda.synchronize() if dev == "cuda" else None
        ops = [e for e in prof.key_averages() if busy(e) > 0]
        mm_names = ("gemm", "gemv", "nvjet", "cutlass", "splitk")  # cuBLAS's; and the decode kernel's matrix products:
        one_row_mm = ("_up", "_down", "_glu1", "_gemv1")
        gemm = [e for e in ops if any(w in e.key.lower() for w in mm_names) or e.key.startswith(one_row_mm)]
        impl = ("fused+compiled" + ("+one-row" if one_row else "")) if fast else "eager"
        rec = {"profile": name, "impl": impl, "batch": PB, "kernels": sum(e.count for e in ops)}
        rec.update(gemm_kernels=sum(e.count for e in gemm))
        top = sorted(ops, key=lambda e: -busy(e))[:8]  # where the step's GPU time goes
        rec.update(top=[[e.key[:70], e.count, round(busy(e) / 1e3, 3)] for e in top])
        rec.update(gpu_busy_ms=round(sum(busy(e) for e in ops) / 1e3, 3))
        rec.update(gemm_ms=round(sum(busy(e) for e in gemm) / 1e3, 3), weight_bytes_ms=round(2 * step_bytes(name, PB) / 4.3e12 * 1e3, 3))
        record(rec)
peak = 4.8e12 if "H200" in (torch.cuda.get_device_name() if dev == "cuda" else "") else None  # HBM bytes/s
fast_policies = [n for n in args.fast_policies.split(",") if n in policies]
for B in batches:
    ids = torch.randint(0, cfg.vocab_size, (B, args.prompt_len), device=dev)
    base = None
    runs = [(name, False) for name in policies] + [(name, True) for name in fast_policies]
    runs += [(name, "tuned") for name in fast_policies if args.tune]
    runs += [(name, "one-row") for name in fast_policies if args.one_row and B == 1]
    runs += [(name, "one-row-min") for name in fast_policies if args.one_row and args.one_row_min and B == 1]
    for name, fast in runs:
        policy = policies[name]
        for blk in model.blocks:  # the routed-FFN path its graphs record (per-token policies only)
            blk.ffn.kernel = policy.get("kernel", "grouped")
        if fast:
            torch.compiler.reset()  # each decoder compiles its own step; no cache limit reached across them
        if policy.get("kernel") == "decode":  # one row through the matrix-vector kernels, or (decode-tiled) not
            from duollm.kernels import triton_decode

            triton_decode.ONE_ROW = policy.get("one_row", True)
        opts = {k: v for k, v in policy.items() if k not in ("kernel", "one_row")}
        kernels.ONE_ROW_MIN = args.one_row_min if fast == "one-row-min" else 0  # read when the step is traced
        one_row = fast in ("one-row", "one-row-min")
        dec = Decoder(model, B, T_final, fuse=bool(fast), compile=bool(fast), tune=fast == "tuned", one_row=one_row, **opts)
        tps = new_tokens_per_s(lambda n, dec=dec, ids=ids: dec.generate(ids, n), B)
        base = tps if name == "all-big" and not fast else base
        impl = (
            ("graphs" if dec.graphs else "eager-static")
            + ("+fused+compiled" if fast else "")
            + (f"+{fast}" if isinstance(fast, str) else "")
        )
        rec = {"batch": B, "policy": name, "impl": impl, "tokens_per_s": round(tps, 1)}
        rec.update({"one_row_min": args.one_row_min} if fast == "one-row-min" else {})
        kv = B * L * 2 * cfg.n_kv_head * (cfg.d_model // cfg.n_head) * T_final  # cache elements a step reads
        rec.update(speedup=round(tps / base, 3), ideal_bytes=round(step_bytes("all-big", B) / step_bytes(name, B), 3))
        rec.update(ideal_bytes_kv=round((step_bytes("all-big", B) + kv) / (step_bytes(name, B) + kv), 3), small_view=args.small_view)
        rec.update(ideal_flops=round(step_flops("all-big") / step_flops(name), 3))
        if peak:
            rec.update(hbm=round((step_bytes(name, B) + kv) * dtype.itemsize * tps / B / peak, 3))
        record(rec)
        del dec
    if str(B) in args.eager_batches.split(","):
        tps = new_tokens_per_s(lambda n, ids=ids: generate(model, ids, n), B)
        record({"batch": B, "policy": "all-big", "impl": "eager", "tokens_per_s": round(tps, 1), "graphs_speedup": round(base / tps, 2)})

hf_batches = [int(b) for b in args.hf_batches.split(",") if b]
if hf_batches:
    hf = hf_llama(cfg, dtype)
    for B in hf_batches:
        ids = torch.randint(0, cfg.vocab_size, (B, args.prompt_len), device=dev)

        def run(n, ids=ids):
            with torch.no_grad():
                return hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

        tps = new_tokens_per_s(run, B)
        ours = next(r["tokens_per_s"] for r in rows if r["batch"] == B and r["policy"] == "all-big" and r["impl"] != "eager")
        record(
            {
                "batch": B,
                "policy": "all-big (dense Llama)",
                "impl": "hf",
                "tokens_per_s": round(tps, 1),
                "duollm_over_hf": round(ours / tps, 2),
            }
        )
with open(args.out, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)

"""A sweep of self-speculative decoding over draft routes and round lengths on a trained run (docs/speed.md):

    python scripts/speculate_sweep.py RUN [--drafts all-small,S-S-,BSSB] [--ks 2,4,6] [--prompts 8] [--new 48] [--fast [--compile]]

Prompts are the first `--prompt-len` tokens of `--prompts` windows spread over the run's validation text. For each
draft route and k: the share of drafts kept, tokens per verifier forward, FLOPs against plain all-BIG decoding
(model/speculate.py), and wall time against plain all-BIG decoding through the same eager reference
(model/decode.py `generate`), both timed in this process after one warm-up (batch 1, one prompt after another). Every
speculative output is compared with all-BIG's greedy tokens (`identical`: the share of prompts equal token for
token; the tests assert it on the CPU, and at a near-tie rounding may differ between one forward of k + 1 tokens
and k + 1 forwards of one). One JSON line per setting, then a markdown table.

`--fast` times the fast paths instead: `SpeculativeDecoder` against plain all-BIG decoding through `Decoder` (CUDA
graphs on a GPU), both with fused projections, and with `--compile` both compiled; the comparison the speedup
target is stated against (docs/speed.md). `--hf` also times transformers' assisted generation with the same draft
(the Duo model under its draft route as the assistant, sharing the weights, k tokens a round at a constant
schedule) against transformers' plain greedy `generate` of all-BIG: `hf_assisted_speedup`, and our time against
it, `over_hf_assisted` (needs the [hf] extra).

With `--fast`, each row also gives what a round costs, in all-BIG decode steps of one token (`Decoder`, same options,
each timed over `--steps` replays after its recording): `draft_step`, a step of the draft route, and `verify_step`,
all-BIG's step over k + 1 tokens. A round of k drafts and one check then costs k·draft_step + verify_step and yields
`tokens_per_round` tokens, so `predicted` = tokens_per_round / (k·draft_step + verify_step) is the speedup that the
step costs alone predict (the host's work between steps, in either decoder, not counted): where a step's time is fixed by kernel launches and
latency rather than by the bytes of weights, draft_step stays near 1 whatever the draft skips, and no draft pays.
"""

import argparse
import json
import time
from contextlib import nullcontext

import torch

from duollm.data.corpus import eval_windows, pick_windows, token_array
from duollm.eval.generate import draft_route
from duollm.model.decode import Decoder, generate
from duollm.model.fuse import fused
from duollm.model.speculate import SpeculativeDecoder, speculative_greedy
from duollm.runs.load import load_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--drafts", default="all-small,S-S-,BSSB")
    p.add_argument("--ks", default="2,4,6")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new", type=int, default=48)
    p.add_argument("--fast", action="store_true", help="time Decoder and SpeculativeDecoder (graphs, fused) instead")
    p.add_argument("--compile", action="store_true", help="with --fast: both compiled")
    p.add_argument("--hf", action="store_true", help="also transformers' assisted generation with the same drafts")
    p.add_argument("--steps", type=int, default=50, help="with --fast: replays per step timing (draft_step, verify_step)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="the model's; auto: bf16 on a GPU")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, model, tok = load_run(a.run, device)
    model.eval()
    if (a.dtype == "auto" and device == "cuda") or a.dtype == "bfloat16":
        model.to(torch.bfloat16)  # how a GPU serves it; a run's weights are stored in fp32
    windows = pick_windows(eval_windows(token_array(cfg.data.val, tok), a.prompt_len), a.prompts, "spread").to(device)  # (P, T)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def clock(fn) -> float:
        fn()  # warm-up
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    plain = [generate(model, w[None], a.new).ids for w in windows]  # all-BIG greedy, the reference output
    room = a.prompt_len + a.new
    fast = {"fuse": True, "compile": a.compile}
    if a.fast:
        big = Decoder(model, 1, room, **fast)
        base_same = sum(torch.equal(big.generate(w[None], a.new).ids, ref) for w, ref in zip(windows, plain, strict=True))
        print(json.dumps({"plain_decoder_identical": base_same / len(windows)}), flush=True)  # against the eager reference
        t_plain = clock(lambda: [big.generate(w[None], a.new) for w in windows])
        one_big = step_seconds(Decoder(model, 1, room, **fast), 1, a.steps, windows[0])  # a step of one token, all-BIG
    else:
        t_plain = clock(lambda: [generate(model, w[None], a.new) for w in windows])
    impl = ("graphs" if device == "cuda" else "static-step") + "+fused" + ("+compiled" if a.compile else "") if a.fast else "eager"
    rows, verify = [], {}
    for text in a.drafts.split(","):
        draft, depth = draft_route(text, cfg.model.n_layer)
        for k in (int(x) for x in a.ks.split(",")):
            stats = []

            spec = SpeculativeDecoder(model, room, draft, k, depth=depth, **fast) if a.fast else None

            same = []

            def run(draft=draft, k=k, stats=stats, spec=spec, same=same, depth=depth) -> None:
                stats.clear(), same.clear()
                for w, ref in zip(windows, plain, strict=True):
                    seq, s = spec.generate(w[None], a.new) if spec else speculative_greedy(model, w[None], a.new, draft, k, depth)
                    same.append(torch.equal(seq, ref))  # all-BIG's greedy text (up to rounding at a near-tie)
                    stats.append(s)

            t = clock(run)
            costs = {}
            if a.fast:  # a round's parts in all-BIG steps of one token
                d = step_seconds(Decoder(model, 1, room, route=draft, depth=depth, **fast), 1, a.steps, windows[0]) / one_big
                if k not in verify:  # all-BIG's step over k + 1 tokens: the same for every draft
                    verify[k] = step_seconds(Decoder(model, 1, room, step_tokens=k + 1, **fast), k + 1, a.steps, windows[0]) / one_big
                v = verify[k]
                costs = {"draft_step": round(d, 3), "verify_step": round(v, 3)}
            hf = hf_times(model, windows, plain, draft, k, a.new, clock) if a.hf and depth is None else {}  # HF: routes only
            drafted, accepted = sum(s["drafted"] for s in stats), sum(s["accepted"] for s in stats)
            rounds = sum(s["rounds"] for s in stats)
            row = {
                "draft": text,
                "k": k,
                "acceptance": round(accepted / drafted, 4),
                "tokens_per_round": round((accepted + rounds) / rounds, 3),
                "flops_ratio": round(sum(s["flops"] for s in stats) / sum(s["flops_all_big"] for s in stats), 3),
                "speedup": round(t_plain / t, 3),
                **costs,
                "identical": sum(same) / len(same),  # outputs equal to all-BIG greedy decoding, token for token
                "impl": impl,
                "dtype": str(next(model.parameters()).dtype).split(".")[-1],
                **(
                    {
                        "hf_assisted_speedup": round(hf["plain"] / hf["assisted"], 3),
                        "over_hf_assisted": round(hf["assisted"] / t, 3),
                        "hf_identical": hf["identical"],
                    }
                    if hf
                    else {}
                ),
                "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            }
            if costs:
                row["predicted"] = round(row["tokens_per_round"] / (k * costs["draft_step"] + costs["verify_step"]), 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    steps = " draft step | verify step | predicted |" if a.fast else ""
    print(f"\n| draft | k | drafts kept | tokens per verifier forward | FLOPs vs all-BIG | speed vs all-BIG ({impl}) |{steps}")
    print("|---|---|---|---|---|---|" + "---|" * (3 if a.fast else 0))
    for r in rows:
        costs = f" {r['draft_step']:.2f} | {r['verify_step']:.2f} | {r['predicted']:.2f}x |" if a.fast else ""
        print(
            f"| {r['draft']} | {r['k']} | {r['acceptance']:.0%} | {r['tokens_per_round']:.2f} | {r['flops_ratio']:.2f}x | {r['speedup']:.2f}x |{costs}"
        )


def step_seconds(dec: Decoder, t: int, steps: int, prompt: torch.Tensor) -> float:
    """Seconds of one of `dec`'s steps over t tokens (batch 1), the mean of `steps` replays after the prompt's prefill
    and the step's recording; each replay starts at the same position, so the cache never fills."""
    dec.generate(prompt[None], 2)  # prefill; builds the fused matrices (dec.fuse) and records the one-token step
    sync = torch.cuda.synchronize if prompt.is_cuda else (lambda: None)
    at = int(dec.pos)
    with fused(dec.model) if dec.fuse else nullcontext():
        for i in range(steps + 1):
            if i == 1:  # the first replay records the step (and compiles it): not timed
                sync()
                t0 = time.perf_counter()
            dec.pos.fill_(at)
            dec.step(1, t)
        sync()
    return (time.perf_counter() - t0) / steps


def hf_times(model, windows, plain, draft, k: int, new: int, clock) -> dict:
    """Seconds for transformers' plain greedy generate and its assisted generation with `draft` as the assistant,
    over the same prompts, each output checked against all-BIG greedy decoding."""
    from duollm.hf.config import DuoLMConfig  # transformers: the [hf] extra, only for --hf
    from duollm.hf.modeling import DuoForCausalLM
    from duollm.routing.route import format_route

    def wrap(policy: str):  # a transformers model over the same DuoLM (its own initial weights dropped)
        c = DuoLMConfig.from_duo(model.cfg)
        c.policy = policy
        h = DuoForCausalLM(c).eval()
        h.model = model
        return h.to(next(model.parameters()).device)

    main, assistant = wrap("all-big"), wrap(format_route(draft))
    gc = assistant.generation_config
    gc.num_assistant_tokens, gc.num_assistant_tokens_schedule, gc.assistant_confidence_threshold = k, "constant", 0.0
    opts = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "pad_token_id": 0}

    same = []

    def run(**extra):
        same.clear()
        with torch.no_grad():
            for w, ref in zip(windows, plain, strict=True):
                same.append(torch.equal(main.generate(w[None], **opts, **extra), ref))

    plain_s, assisted_s = clock(run), clock(lambda: run(assistant_model=assistant))
    return {"plain": plain_s, "assisted": assisted_s, "identical": sum(same) / len(same)}


if __name__ == "__main__":
    main()

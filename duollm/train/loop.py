"""Stage-1 training with random routing (docs/design.md §2; arXiv:2410.10846 §2).

Every (token, layer) choice is drawn independently, afresh each step, from `p = {big, small, skip}`
(default 0.5/0.5/0); a mix with one choice at probability 1 (p_big = 1: the dense model) is a static route,
so nothing is drawn and the modules run on every token without routing. With `exact_counts` each layer's choices
come in exact proportions p instead (a random permutation per layer; routing/sample.py `random_route`), so their
counts are the same at every step and are handed to the model: its routed FFNs run the sorted path with no host
read, compiled too, at fixed shapes. `init` starts from another run's
weights and `train_only` lets only the small (or big) modules learn: the paper's freeze-big-then-train-small
ablation is a dense run, then `--train.init=DENSE --train.train_only=small`. AdamW with linear warmup and
cosine decay, gradient clipping, gradient accumulation, bf16 autocast on a GPU. One `torch.Generator` draws
both the batches and the routes; it is saved in every
checkpoint, so a resumed run sees the same data and routes as an uninterrupted one and ends with the same
loss. Under torchrun every rank draws the same global batch from the same generator and keeps its own slice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from duollm import config as config_mod
from duollm import distributed
from duollm.config import TrainConfig
from duollm.data.corpus import sample_batch, token_array
from duollm.data.tokenizer import load_tokenizer
from duollm.errors import DuoError
from duollm.files import write_text
from duollm.model.transformer import DuoLM
from duollm.routing.cost import route_cost
from duollm.routing.route import Choice
from duollm.routing.sample import exact_counts, exact_route, random_route
from duollm.runs import checkpoint


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def make_optimizer(model: DuoLM, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices, none on norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]  # frozen ones (train_only) are left out
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def train(cfg, out: Path, resume: bool = False, progress: bool = True, on_step: Callable[[int], None] | None = None) -> dict:
    """Run (or resume) stage-1 training of `cfg` (a RunConfig) in run directory `out`; return the summary. `on_step`
    is called with the step number after each optimizer step (a profiler's `step`, benchmarks/bench_train.py)."""
    tc, out = cfg.train, Path(out)
    if tc.seq_len > cfg.model.max_seq_len:
        raise DuoError(f"train.seq_len {tc.seq_len} exceeds model.max_seq_len {cfg.model.max_seq_len}")
    random_route((1, 1, 1), tc.p_big, tc.p_small, tc.p_skip, torch.Generator())  # validate p early
    if tc.train_only == "small" and cfg.model.small_view:
        raise DuoError(
            "train.train_only=small: SMALL is a view of BIG's weights here (model.small_view), so it has no weights of its own to train"
        )
    tok = load_tokenizer(cfg.data.tokenizer)  # check the inputs before the run directory is touched
    if tok.vocab_size > cfg.model.vocab_size:
        raise DuoError(f"the tokenizer has {tok.vocab_size} tokens but model.vocab_size is {cfg.model.vocab_size}")
    start = None
    if tc.init and (start := checkpoint.latest(Path(tc.init))) is None:
        raise DuoError(f"train.init: {tc.init} has no checkpoint to start from")
    tokens = token_array(cfg.data.train, tok)
    d = distributed.init(tc.device)
    if d.is_main:
        prepare_run_dir(out, cfg, resume)
    distributed.barrier(d)

    torch.manual_seed(tc.seed)  # model init
    model = DuoLM(cfg.model).to(d.device)
    if start is not None:  # e.g. a dense run, before the small modules learn (the paper's freeze ablation)
        checkpoint.load_weights(start[1], model)
    if tc.train_only:
        for name, p in model.named_parameters():
            p.requires_grad_(f".{tc.train_only}." in name)
    opt = make_optimizer(model, tc)
    gen = torch.Generator().manual_seed(tc.seed)  # batches and routes, on the host
    step = 0
    if resume and (ck := checkpoint.latest(out)) is not None:
        step, folder = ck
        checkpoint.load_weights(folder, model)
        checkpoint.load_train_state(folder, model, opt, gen, step)
    if d.is_main:
        trim_metrics(out / "metrics.jsonl", step)
    dmodel = distributed.parallelize(model, d, tc.compile)
    use_bf16 = tc.dtype == "bfloat16" or (tc.dtype == "auto" and d.device.startswith("cuda"))
    autocast = torch.autocast("cuda" if d.device.startswith("cuda") else "cpu", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    B, T, L = tc.batch_size, tc.seq_len, cfg.model.n_layer
    tokens_per_step = B * T * tc.grad_accum * d.world
    cost = cfg.model.cost(T)
    mix = {Choice.BIG: tc.p_big, Choice.SMALL: tc.p_small, Choice.SKIP: tc.p_skip}
    only = next((c for c, p in mix.items() if p == 1.0), None)
    bar = None
    if progress and d.is_main:
        bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    t0, last_loss, summary_tps = time.perf_counter(), float("nan"), 0.0
    window_tokens, window_t0 = 0, time.perf_counter()
    counts = None  # with exact counts, each layer's (BIG, SMALL, SKIP): the same at every step
    if tc.exact_counts and only is None:
        counts = (exact_counts(B * T, tc.p_big, tc.p_small),) * L
    while step < tc.steps:
        lr = lr_at(step, tc)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum, flops = torch.zeros((), device=d.device), 0.0
        for micro in range(tc.grad_accum):
            x = sample_batch(tokens, B * d.world, T + 1, gen)[d.rank * B : (d.rank + 1) * B]  # (B, T+1)
            if only is not None:  # one choice with probability 1: a static route, so the model runs it densely
                route = torch.full((L,), only, dtype=torch.uint8)
            elif tc.exact_counts:  # exact counts on every rank: fixed shapes, handed to the model (no host read)
                u = torch.rand((d.world, B, T, L), generator=gen)[d.rank]  # every rank's draws: the generator stays in step
                route = exact_route(u, tc.p_big, tc.p_small)  # (B, T, L), as random_route(exact=True) draws it
            else:
                route = random_route((B * d.world, T, L), tc.p_big, tc.p_small, tc.p_skip, gen)[d.rank * B : (d.rank + 1) * B]  # (B, T, L)
            if d.device.startswith("cuda"):  # pinned, so that both copies are queued without waiting for the GPU
                x, route = x.pin_memory(), route.pin_memory()  # (a copy from pageable memory first drains the stream)
            x = x.to(d.device, non_blocking=True)
            sync = micro == tc.grad_accum - 1 or d.world == 1
            with nullcontext() if sync else dmodel.no_sync(), autocast:
                res = dmodel(x[:, :-1], route=route, targets=x[:, 1:], counts=counts)
            (res.loss / tc.grad_accum).backward()
            loss_sum += res.loss.detach()
            per_token = route_cost(route, cost)  # (B, T), or a scalar for a static route
            flops += 3 * float(per_token.sum() if route.dim() == 3 else per_token * B * T)  # forward + backward FLOPs
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if on_step is not None:
            on_step(step)
        window_tokens += tokens_per_step
        if step % tc.log_every == 0 or step == tc.steps:
            last_loss = float(distributed.all_mean(loss_sum / tc.grad_accum, d))  # one host sync per log line
            dt = time.perf_counter() - window_t0
            tps = window_tokens / dt
            rec = {
                "step": step,
                "loss": round(last_loss, 5),
                "lr": lr,
                "tokens_per_s": round(tps, 1),
                "tflops": round(flops * d.world * window_tokens / tokens_per_step / dt / 1e12, 3),
            }
            summary_tps = tps
            window_tokens, window_t0 = 0, time.perf_counter()
            if d.is_main:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if bar is not None:
                bar.set_postfix(loss=f"{last_loss:.3f}", tok_s=f"{tps:,.0f}")
        if bar is not None:
            bar.update(1)
        if (tc.ckpt_every and step % tc.ckpt_every == 0) or step == tc.steps:
            if d.is_main:
                checkpoint.save_checkpoint(out, model, opt, gen, step, config_mod.to_dict(cfg))
            distributed.barrier(d)
    if bar is not None:
        bar.close()
    distributed.shutdown(d)
    if math.isnan(last_loss) and (m := read_metrics(out / "metrics.jsonl")):
        last_loss, summary_tps = m[-1]["loss"], m[-1]["tokens_per_s"]
    return {"steps": step, "final_loss": last_loss, "tokens_per_s": summary_tps, "seconds": round(time.perf_counter() - t0, 2)}


def prepare_run_dir(out: Path, cfg, resume: bool) -> None:
    """Create the run directory with config.json, or check that an existing one holds this same run."""
    cfg_file = out / "config.json"
    if cfg_file.exists():
        if not resume:
            raise DuoError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        try:
            saved = config_mod.from_dict(type(cfg), json.loads(cfg_file.read_text()))
        except (ValueError, json.JSONDecodeError) as e:
            raise DuoError(f"{cfg_file} is not a valid run config ({str(e).splitlines()[0]})") from None
        saved.train.steps = cfg.train.steps  # a resumed run may be extended
        if changed := config_mod.diff(saved, cfg):
            raise DuoError(f"{out} holds a different run ({'; '.join(changed[:3])}); choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise DuoError(f"{out} exists and is not a duollm run directory; choose another --out")
    elif resume:
        raise DuoError(f"nothing to resume: {out} holds no run")
    out.mkdir(parents=True, exist_ok=True)
    write_text(cfg_file, config_mod.save_json(cfg))


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from (they will be logged again)."""
    if path.exists():
        keep = [json.dumps(m) for m in read_metrics(path) if m["step"] <= step]
        path.write_text("".join(k + "\n" for k in keep))

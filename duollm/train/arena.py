"""The arena (docs/arena.md): adaptive methods and their baselines trained side by side at equal training tokens.

    run_arena(ArenaSpec(out="runs/arena", entrants="dense,dense:budget=0.5,duo-random:budget=0.5", seeds=2))

Every entrant (methods/: `build(name, cfg, **options)`) starts from the same backbone config (a preset's DuoConfig),
trains on the same batches of the preset's training text for the same number of tokens, with the same optimizer and
learning-rate schedule as stage-1 training (train/loop.py `make_optimizer`, `lr_at`), minimising `loss + aux`. Seed s
sets the model's init (torch's global generator, before `build`) and the batches (a generator of their own), so two
entrants of one seed see the same tokens in the same order. After training, an entrant that has a `calibrate(windows)`
method (a budget met by an offset, a fixed route chosen) calibrates on windows of the *training* text, never on the
evaluation's. Then, under `eval()`, each held-out split (prose-val and code-val: the built corpus's when the preset
trains on one, else the built-in ones) is cut into consecutive windows, and the entrant predicts the last T-1 tokens
of each from the ones before: perplexity, and the mean of `out.flops` over those predicted tokens.

Files in `out`, each written atomically (duollm/files.py):
  arena.json             the settings: preset, resolved run config, training tokens; a later call must match them
  arena.jsonl            one row per entrant and seed (`ROW_KEYS`); an entrant whose row is there is skipped, so an
                         interrupted arena resumes where it stopped
  entrants/<label>-seed<s>/   the trained entrant (`save_entrant`: safetensors and JSON; `load_entrant` reads it)
                              and source.json (its tokenizer), so that `duollm generate --run FOLDER` decodes with it;
                              for an entrant with a Duo model inside (duo-random, duo-joint) also run/, a run directory
                              of that model (`write_duo_run`), for the paper's frozen-base router and the oracle

Entrants whose options differ only in what changes evaluation (an entrant's `eval_options`: duo-random's budget and
route, mod's routing rule) train once per seed and process; the others start from a copy of that training
(`shared_training` in their rows names it), so `duo-random:budget=0.5,duo-random:budget=0.33` costs one training.

Several processes may share one `out`, each training its own entrants (the same settings, distinct entrants): each
row is added under a lock on `out/.arena.lock`, re-reading the file first. Their `tokens_per_s` then shares the device;
`--speed` measures every entrant again, one after the other in one process: training tokens/s
(`speed_train_tokens_per_s`, 10 timed steps on random tokens after 2 warm-up steps), prefill and greedy decoding
(`measure_speed`), for every row of the spec, timed before or not (ratios compare within one pass), loading the
saved entrant (`speed_weights` "trained"), or, where that is gone, building a fresh one from the row's options when
they alone fix its compute (`fixed_compute`: dense, duo-random; "untrained"). `speed_pass` names the pass (its start time): compare timings within one pass
(analysis/arena.py `speed_ratios`). `--speed-only` trains nothing and times the rows that are there.

Realised compute: `compute` = FLOPs per token over the dense BIG model's at the same positions; `ffn_share` = the FFN
part of the FLOPs (all but attention and the head, so a router's scores count here) over all-BIG's FFN FLOPs, beside
`target`, the entrant's `budget` attribute (its target FFN share) where it has one.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from duollm.config import RunConfig, apply_overrides, save_json, to_dict
from duollm.data import built
from duollm.data.corpus import eval_windows, sample_batch, seeded_windows, token_array
from duollm.data.tokenizer import load_tokenizer
from duollm.errors import DuoError
from duollm.files import atomic_folder, write_json, write_text
from duollm.flags import Count, Positive
from duollm.methods import SOURCE_FILE, Entrant, build, greedy, load_entrant, save_entrant
from duollm.model.transformer import DuoLM
from duollm.presets import run_config
from duollm.routing.cost import dense_cost
from duollm.routing.route import Choice
from duollm.runs import checkpoint
from duollm.train.loop import lr_at, make_optimizer

RESULTS, SETTINGS = "arena.jsonl", "arena.json"
ROW_KEYS = (
    *("label", "method", "options", "seed", "preset", "ppl", "loss", "eval_tokens", "flops", "flops_per_token"),
    *("flops_dense_big", "compute", "ffn_share", "target", "calibrated", "params", "train_tokens", "train_seconds"),
    *("tokens_per_s", "final_loss", "stats"),
)  # and shared_training where it applies; with --speed speed_train_tokens_per_s, prefill_tokens_per_s,
# decode_tokens_per_s (batch 1), decode_tokens_per_s_b64
SPEED_KEYS = ("speed_train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s", "decode_tokens_per_s_b64")


@dataclass
class ArenaSpec:
    """The settings of `run_arena`: the entrants, the backbone preset, the training tokens, the seeds."""

    out: str  # result folder: arena.jsonl, arena.json, entrants/ (an existing arena of the same settings resumes)
    entrants: str = "dense,dense:budget=0.5,duo-random:budget=0.5"  # NAME[:KEY=VALUE,...] per entrant, comma-separated
    preset: str = "arena-toy"  # the backbone, its data and training settings: arena (one GPU) or arena-toy (CPU)
    tokens: Count = 0  # training tokens per entrant (rounded up to whole steps); 0 = the preset's steps x batch x seq_len
    seeds: Positive = 1  # train every entrant with seeds 0..N-1 (init and batches)
    first_seed: Count = 0  # train seeds first_seed..N-1 only (another process may train the ones before, into the same out)
    eval_tokens: Count = 0  # evaluate at most this many tokens of each held-out split; 0 = all of it
    calib_seqs: Positive = 16  # training-text windows an entrant calibrates on (its budget offset or fixed route)
    speed: bool = False  # also time prefill (16 windows) and greedy decoding (batch 1 and 64) of each trained entrant
    speed_only: bool = False  # train nothing: time the entrants whose rows are there (as --speed) and stop
    overrides: dict = field(default_factory=dict)  # dotted config keys applied to the preset, e.g. {"train.batch_size": "4"}


def parse_value(text: str):
    """`0.5` → 0.5, `2` → 2, `true` → True; anything else stays a string (a route such as BSBS)."""
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        return text
    return v if isinstance(v, int | float | bool) else text


def parse_entrants(text: str) -> list[tuple[str, dict]]:
    """`dense,dense:budget=0.5,mod:capacity=0.125,every=2` → [(name, options), …]: an item with a colon, or without
    `=`, starts an entrant; a bare `key=value` adds an option to the one before. DuoError in one line on bad text."""
    out: list[tuple[str, dict]] = []
    for item in (s.strip() for s in text.split(",")):
        name, colon, rest = item.partition(":")
        if not colon and "=" in item:  # another option of the entrant before
            if not out:
                raise DuoError(f"--entrants: option {item!r} comes before any entrant (write NAME:KEY=VALUE)")
            pairs = [item]
        else:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise DuoError(f"--entrants: bad entrant {item!r} (write NAME or NAME:KEY=VALUE, comma-separated)")
            out.append((name, {}))
            pairs = [rest] if rest else []
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or not key.isidentifier() or not value:
                raise DuoError(f"--entrants: bad option {pair!r} of {out[-1][0]} (write KEY=VALUE)")
            if key in out[-1][1]:
                raise DuoError(f"--entrants: option {key!r} given twice for {out[-1][0]}")
            out[-1][1][key] = parse_value(value)
    if not out:
        raise DuoError("--entrants names no entrant")
    return out


def label(name: str, options: dict) -> str:
    """An entrant's name in tables: `dense:budget=0.5`."""
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


def eval_splits(cfg: RunConfig) -> dict[str, str]:
    """The held-out splits by name: a built corpus's prose-val and code-val when the preset trains on one, else the
    built-in splits of the same names."""
    corpus = Path(cfg.data.train)
    if built.is_built_corpus(corpus):
        return {s: str(corpus / f"{s}.jsonl") for s in ("prose-val", "code-val")}
    return {s: s for s in ("prose-val", "code-val")}


def resolve(spec: ArenaSpec) -> tuple[RunConfig, int]:
    """(the backbone's RunConfig, optimizer steps per entrant) of `spec`."""
    cfg = apply_overrides(run_config(spec.preset), spec.overrides)
    tc = cfg.train
    if tc.seq_len > cfg.model.max_seq_len:
        raise DuoError(f"train.seq_len {tc.seq_len} exceeds model.max_seq_len {cfg.model.max_seq_len}")
    per_step = tc.batch_size * tc.grad_accum * tc.seq_len
    steps = math.ceil(spec.tokens / per_step) if spec.tokens else tc.steps
    if steps < 1:
        raise DuoError(f"--tokens {spec.tokens} is less than one step ({per_step} tokens)")
    return cfg, steps


def train_entrant(model: Entrant, tokens, cfg: RunConfig, steps: int, gen: torch.Generator, device: str) -> dict:
    """`steps` of AdamW on `loss + aux` over batches of `tokens` drawn from `gen`; the stage-1 schedule and clipping.
    Returns the final loss, the wall seconds and tokens/s."""
    tc = dataclasses.replace(cfg.train, steps=steps)
    opt = make_optimizer(model, tc)
    bf16 = tc.dtype == "bfloat16" or (tc.dtype == "auto" and device.startswith("cuda"))
    autocast = torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    B, T = tc.batch_size, tc.seq_len
    model.train()
    t0, loss, stats = time.perf_counter(), torch.zeros(()), {}
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        loss = torch.zeros((), device=device)
        for _ in range(tc.grad_accum):
            x = sample_batch(tokens, B, T + 1, gen).to(device)  # (B, T+1)
            with autocast:
                out = model(x[:, :-1], targets=x[:, 1:])
            ((out.loss + out.aux) / tc.grad_accum).backward()
            loss += out.loss.detach() / tc.grad_accum
            stats = out.stats
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    final = float(loss)  # the one host sync of the run (and the GPU drained before the clock stops)
    seconds = time.perf_counter() - t0
    n = steps * tc.grad_accum * B * T
    return {
        "final_loss": round(final, 5),
        "train_tokens": n,
        "train_seconds": round(seconds, 2),
        "tokens_per_s": round(n / seconds, 1),
        "stats": stats,
    }


@torch.no_grad()
def evaluate_entrant(model: Entrant, windows: torch.Tensor, batch_size: int, device: str) -> dict:
    """Under `eval()`: summed next-token loss, predicted tokens and summed FLOPs over `windows` (N, T), each window
    predicting its last T-1 tokens."""
    model.eval()
    loss, flops, n = 0.0, 0.0, 0
    for w in windows.split(batch_size):
        w = w.to(device)
        out = model(w[:, :-1], targets=w[:, 1:])  # flops (B, T-1): the predicted tokens' own
        loss += float(out.loss) * w[:, 1:].numel()
        flops += float(out.flops.sum())
        n += w[:, 1:].numel()
    return {"loss": loss, "flops": flops, "tokens": n}


@torch.no_grad()
def measure_speed(model: Entrant, seq_len: int, vocab: int, device: str, n_new: int = 64) -> dict:
    """Tokens/s of one forward over 16 windows of `seq_len` (prefill) and of greedy decoding of `n_new` tokens after a
    16-token prompt at batch 1 and 64 (methods/base.py `greedy`), each timed after one warm-up run, in this process
    (a window shorter than 32 tokens: a prompt of half of it, and the other half decoded). None for the decoding of an
    entrant that does not decode (`Entrant.decodes`)."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    n_prompt = min(16, seq_len // 2)
    n_new = min(n_new, seq_len - n_prompt)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn) -> float:
        fn()  # warm-up: allocations, kernel choices
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    ids = torch.randint(0, vocab, (16, seq_len), generator=gen).to(device)  # (16, T)
    out = {"prefill_tokens_per_s": round(ids.numel() / timed(lambda: model(ids)), 1)}
    for B, key in ((1, "decode_tokens_per_s"), (64, "decode_tokens_per_s_b64")):
        if not model.decodes:  # a rule that needs later tokens (mod's top-k) has no decoding to time
            out[key] = None
            continue
        prompt = torch.randint(0, vocab, (B, n_prompt), generator=gen).to(device)  # (B, n_prompt)
        out[key] = round(B * n_new / timed(lambda p=prompt: greedy(model, p, n_new)), 1)
    return out


def measure_training(name: str, options: dict, cfg: RunConfig, device: str, steps: int = 10) -> float:
    """Training tokens/s of a fresh entrant at `cfg`'s batch and length: `steps` timed steps of `train_entrant` after 2
    warm-up steps, on random tokens (the rate does not depend on the text)."""
    tokens = torch.randint(0, cfg.model.vocab_size, (4_000_000,), generator=torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(0)
    model = build(name, cfg.model, **options).to(device)
    train_entrant(model, tokens, cfg, 2, torch.Generator().manual_seed(0), device)  # warm-up: allocations, kernel choices
    rate = train_entrant(model, tokens, cfg, steps, torch.Generator().manual_seed(1), device)["tokens_per_s"]
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rate


def read_rows(out: Path) -> list[dict]:
    path = Path(out) / RESULTS
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError:
        raise DuoError(f"{path} holds a line that is not JSON; remove it or choose another --out") from None


@contextmanager
def locked(out: Path):
    """An exclusive lock on `out/.arena.lock`, for the read-modify-write of arena.jsonl by processes sharing `out`."""
    with open(out / ".arena.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def put_row(out: Path, row: dict) -> None:
    """Add `row` to `out/arena.jsonl` (replacing the row of the same label and seed), atomically and under the lock."""
    with locked(out):
        rows = [r for r in read_rows(out) if (r["label"], r["seed"]) != (row["label"], row["seed"])]
        write_text(out / RESULTS, "".join(json.dumps(r) + "\n" for r in [*rows, row]))


def differing(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys where `a` and `b` differ (`config.train.lr`), the first eight."""
    out = []
    for k in dict.fromkeys([*a, *b]):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differing(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out[:8]


def with_defaults(saved: dict, defaults: dict) -> dict:
    """`saved` with every key it lacks taken from `defaults`, section by section (a config written before a field was
    added: the default is what that run used)."""
    out = dict(saved)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = with_defaults(out[k], v)
    return out


def training_key(model: Entrant, seed: int) -> str:
    """What fixes an entrant's training: its method, its options but those that change evaluation only, the seed."""
    train_options = {k: v for k, v in model.options.items() if k not in model.eval_options}
    return json.dumps([model.method, train_options, seed], sort_keys=True)


def check_settings(out: Path, settings: dict) -> None:
    """Write `out/arena.json`, or check that the one there holds the same settings (a resumed arena). The arena's files
    have names of their own, so `out` may be a run directory too (the demo's arena sits in its run)."""
    path = out / SETTINGS
    if path.exists():
        saved = json.loads(path.read_text())
        if isinstance(saved.get("config"), dict):  # a setting added since holds its default there: it ran as the default
            saved["config"] = with_defaults(saved["config"], to_dict(RunConfig()))
        if saved != settings:
            changed = differing(saved, settings)
            raise DuoError(f"{out} holds an arena with other settings ({', '.join(changed)}); choose another --out")
    write_json(path, settings)


def run_arena(spec: ArenaSpec, log: Callable[[str], None] | None = None) -> dict:
    """Train and evaluate every entrant and seed of `spec` not yet in `out/arena.jsonl`; return {"out", "rows",
    "skipped", "seconds"}, the rows of this spec's entrants in order. `log` gets one line per entrant."""
    log = log or (lambda line: None)
    t0 = time.perf_counter()
    entrants = parse_entrants(spec.entrants)
    if spec.first_seed >= spec.seeds:
        raise DuoError(f"--first-seed {spec.first_seed} leaves no seed below --seeds {spec.seeds}")
    cfg, steps = resolve(spec)
    for name, options in entrants:  # every name and option checked before any training
        build(name, cfg.model, **options)
    labels = [label(n, o) for n, o in entrants]
    if len(set(labels)) < len(labels):
        raise DuoError(f"--entrants names an entrant twice: {spec.entrants}")
    tok = load_tokenizer(cfg.data.tokenizer)
    if tok.vocab_size > cfg.model.vocab_size:
        raise DuoError(f"the tokenizer has {tok.vocab_size} tokens but model.vocab_size is {cfg.model.vocab_size}")
    train_tokens = token_array(cfg.data.train, tok)
    T = cfg.train.seq_len
    splits = {s: eval_windows(token_array(src, tok), T, spec.eval_tokens or None) for s, src in eval_splits(cfg).items()}
    out = Path(spec.out)
    settings = {
        "preset": spec.preset,
        "config": to_dict(cfg),
        "steps": steps,
        "eval_tokens": spec.eval_tokens,
        "calib_seqs": spec.calib_seqs,
    }
    check_settings(out, settings)
    device = "cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu"
    table = cfg.model.cost(T - 1)  # predicted tokens sit at positions 0..T-2: the mean context of T-1 tokens
    dense_big, ffn_big = dense_cost(table), float(table.ffn[:, Choice.BIG].sum())
    done = {(r["label"], r["seed"]) for r in read_rows(out)}
    skipped: list[str] = []
    for seed in range(spec.first_seed, spec.seeds):
        todo = [(name, options, lab) for (name, options), lab in zip(entrants, labels, strict=True) if (lab, seed) not in done]
        if spec.speed_only:
            skipped += [f"{lab} seed {seed} (not trained: --speed-only)" for _, _, lab in todo]
            todo = []
        skipped += [f"{lab} seed {seed}" for lab in labels if (lab, seed) in done]
        with torch.random.fork_rng(devices=[]):  # what fixes each one's training, found without touching the seeds
            keys = {lab: training_key(build(name, cfg.model, **options), seed) for name, options, lab in todo}
        first: dict[str, tuple[str, dict, dict]] = {}  # training key -> (label, state before calibration, training row)
        for name, options, lab in todo:
            torch.manual_seed(cfg.train.seed + seed)  # the init, and whatever the entrant draws from torch's generator
            model = build(name, cfg.model, **options).to(device)
            key = keys[lab]
            if key in first:  # the same training as an entrant before it: start from a copy of it
                source, state, trained = first[key]
                model.load_state_dict(state)
                trained = {**trained, "shared_training": source}
            else:
                gen = torch.Generator().manual_seed(cfg.train.seed + seed)  # the batches: the same for every entrant of a seed
                trained = train_entrant(model, train_tokens, cfg, steps, gen, device)
                if any(k == key for other, k in keys.items() if other != lab):
                    first[key] = (lab, {k: v.detach().clone() for k, v in model.state_dict().items()}, trained)
            calibrated = None
            if callable(getattr(model, "calibrate", None)):
                windows = seeded_windows(train_tokens, spec.calib_seqs, T, seed=10_000 + cfg.train.seed + seed)  # (n, T)
                calibrated = model.calibrate(windows.to(device))
            res = {s: evaluate_entrant(model, w, cfg.train.batch_size, device) for s, w in splits.items()}
            n = sum(r["tokens"] for r in res.values())
            fpt = sum(r["flops"] for r in res.values()) / n
            target = getattr(model, "budget", None)
            row = {
                "label": lab,
                "method": name,
                "options": model.options,
                "seed": seed,
                "preset": spec.preset,
                "ppl": {s: round(math.exp(r["loss"] / r["tokens"]), 4) for s, r in res.items()},
                "loss": {s: round(r["loss"] / r["tokens"], 5) for s, r in res.items()},
                "eval_tokens": {s: r["tokens"] for s, r in res.items()},
                "flops": {s: round(r["flops"] / r["tokens"]) for s, r in res.items()},
                "flops_per_token": round(fpt),
                "flops_dense_big": round(dense_big),
                "compute": round(fpt / dense_big, 4),
                "ffn_share": round((fpt - (dense_big - ffn_big)) / ffn_big, 4),
                "target": None if target is None else float(target),
                "calibrated": calibrated,
                "params": sum(p.numel() for p in model.parameters()),
                **trained,
            }
            folder = out / "entrants" / f"{entrant_folder(lab)}-seed{seed}"
            save_entrant(model, folder)
            write_json(folder / SOURCE_FILE, {"tokenizer": cfg.data.tokenizer, "preset": spec.preset})  # for duollm generate
            if isinstance(getattr(model, "duo", None), DuoLM):  # a Duo model inside: also a run directory, for --run
                write_duo_run(folder / "run", model.duo.cpu(), cfg)
            put_row(out, row)
            log(format_row(row))
            del model
        first.clear()
    wanted = {(lab, s) for lab in labels for s in range(spec.first_seed, spec.seeds)}
    if spec.speed or spec.speed_only:  # every entrant of the spec timed one after the other, in this process
        speed_pass = time.strftime("%Y-%m-%dT%H:%M:%S")  # names this pass: ratios are taken within one
        warm = False  # the first entrant timed in a process ran slow in three passes out of four (docs/results.md)
        for row in [r for r in read_rows(out) if (r["label"], r["seed"]) in wanted]:  # timed again if timed before
            folder = out / "entrants" / f"{entrant_folder(row['label'])}-seed{row['seed']}"
            if (folder / "entrant.json").is_file():
                model, weights = load_entrant(folder, device), "trained"
            elif build(row["method"], cfg.model, **row["options"]).fixed_compute:  # the options fix its compute
                model, weights = build(row["method"], cfg.model, **row["options"]).to(device), "untrained"
            else:
                log(f"{row['label']} seed {row['seed']}: no saved entrant in {folder}, not timed")
                continue
            if not warm:  # so the pass's first timings are taken twice and the first ones dropped
                measure_speed(model, T, cfg.model.vocab_size, device)
                measure_training(row["method"], row["options"], cfg, device)
                warm = True
            speed = measure_speed(model, T, cfg.model.vocab_size, device)
            del model
            speed["speed_train_tokens_per_s"] = measure_training(row["method"], row["options"], cfg, device)
            timing = {**speed, "speed_weights": weights, "speed_pass": speed_pass}
            if "speed_pass" in row:  # timed before: that pass's timings are kept beside this one's, never lost
                row = {**row, "speed_earlier": [*row.get("speed_earlier", []), {k: row[k] for k in timing if k in row}]}
            put_row(out, {**row, **timing})
            log(f"{row['label']} seed {row['seed']}: " + ", ".join(f"{k} {v:,.0f}" for k, v in speed.items() if v is not None))
    mine = [r for r in read_rows(out) if (r["label"], r["seed"]) in wanted]
    order = {(lab, s): i for i, (lab, s) in enumerate((lab, s) for s in range(spec.seeds) for lab in labels)}
    mine.sort(key=lambda r: order[(r["label"], r["seed"])])
    return {"out": str(out), "rows": mine, "skipped": skipped, "seconds": round(time.perf_counter() - t0, 1)}


def write_duo_run(folder: Path, duo: DuoLM, cfg: RunConfig) -> None:
    """An entrant's Duo model (duo-random's, duo-joint's) as a run directory: config.json and a weights-only
    checkpoint, so that the tools that take `--run` read it: `duollm router train --run FOLDER` fits the paper's
    frozen-base router to it (the comparison with duo-joint), `duollm oracle` and `duollm eval` run on it."""
    run_cfg = dataclasses.replace(cfg, model=duo.cfg)
    with atomic_folder(folder) as tmp:
        (tmp / "config.json").write_text(save_json(run_cfg))
        checkpoint.save_weights_only(tmp, duo, 0, save_json(run_cfg))


def entrant_folder(lab: str) -> str:
    """A label as a folder name: `dense:budget=0.5` → `dense_budget-0.5`."""
    return lab.replace(":", "_").replace("=", "-").replace(",", "_")


def format_row(r: dict) -> str:
    ppl = ", ".join(f"{s} {v:.2f}" for s, v in r["ppl"].items())
    target = f" (target {r['target']:.3f})" if r["target"] is not None else ""
    return (
        f"{r['label']} seed {r['seed']}: ppl {ppl}; {r['flops_per_token'] / 1e6:.3f} MFLOP/token = {r['compute']:.1%} of dense BIG, "
        f"FFN share {r['ffn_share']:.3f}{target}; {r['train_tokens']:,} tokens in {r['train_seconds']:.1f} s"
    )

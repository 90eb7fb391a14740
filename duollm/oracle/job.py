"""The oracle job of `duollm oracle`: the oracle sweep of a trained run, written to `RUN/oracle/<options>/`.

    duollm oracle --run RUN --budgets 0-12,free --options big,small --mode causal --random 100

Files (everything `duollm difficulty` and `duollm report` read; no model needed to read them):
  summary.json       the JSON of docs/design.md §4 (`mode`, `options`, `ppl_all_big`, `ppl_all_small`,
                     `budgets: [{k, ppl_oracle, ppl_fixed, ppl_random_best, …}]`) plus the set's sizes,
                     the fixed routes, the random trials' spread and the seconds taken
  tokens.jsonl.gz    one row per predicted token: `seq`, `pos` (of the input token), `token` and `text`
                     (the token to predict), `loss/<column>` for every policy and `route/<column>` as a
                     B/S/- string, columns `all-big`, `all-small` and `MODE/K` for MODE shared, causal, fixed, random
  <folder>.partial-summary.json   beside the folder while the sweep runs: the summary of the phases done so far
                     (`partial`: "up to fixed" or "up to causal"), so that a run cut short keeps its numbers; removed
                     when the folder is written

Budgets: `--options big,small` counts BIG layers (k), `big,skip` counts SKIP layers, `big,small,skip` takes
`b/m/s` counts. A list mixes single counts (`4`), ranges (`0-12`), schedules (`6>2`: the count moves
linearly from 6 at the first position to 2 at the last) and `free` (no count: the unconstrained oracle).
`--beam W` searches each budget by a beam of width W over the route tree (oracle/beam.py) instead of the whole
route set, in both modes; `--groups G` makes G consecutive layers share one choice (oracle/groups.py). Budgets
count layers either way, and the summary records `beam` and `groups`.

Under torchrun the windows are split into contiguous blocks, one per rank, and rank 0 writes the files:

    torchrun --nproc_per_node=2 -m duollm -- oracle --run RUN ...

(the `--` stops torchrun's own parser from reading `--run` as an abbreviation of its `--run-path`).
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from duollm import distributed
from duollm.data.corpus import eval_windows, pick_windows, token_array
from duollm.errors import DuoError
from duollm.files import atomic_folder, write_json
from duollm.flags import Count, Positive
from duollm.oracle.groups import Groups, reachable
from duollm.oracle.sweep import gather, ppl, shared_work, sweep, walk_budgets, work
from duollm.routing.budget import Budget, Schedule, parse_options
from duollm.routing.route import format_route
from duollm.runs.load import autocast, check_dtype, load_run


@dataclass
class OracleSpec:
    """The settings of `run_oracle`: the run, the budgets and modes, the windows, the baselines."""

    run: str  # run directory (from duollm train)
    budgets: str = ""  # e.g. 0-12, 4,6,8, 6>2 (schedule), free; default: every count and free
    options: str = "big,small"  # big,small (k = BIG layers) | big,skip (k = SKIP layers) | big,small,skip (b/m/s)
    mode: str = "shared"  # shared (the paper's oracle) | causal (ours; the shared one runs too, for fixed)
    random: Count = 100  # N of random best-of-N; 0 = none
    random_budgets: str = ""  # the budgets random best-of-N runs for (a subset of --budgets); default all
    split: str = ""  # built-in split; default: the run's validation split ...
    data: str = ""  # ... or a user's text file, folder or .jsonl
    seqs: Positive = 64  # evaluate this many windows of the split ...
    pick: str = "first"  # ... the first ones, or spread evenly over it (spread: every source of a mixed split)
    seq_len: Count = 0  # window length; 0 = the run's train.seq_len
    batch_size: Positive = 16  # windows per forward
    causal_budgets: str = ""  # with --mode causal: the budgets the causal oracle runs for (a subset of --budgets); default all
    causal_batch_size: Count = 0  # windows per causal search (it steps position by position: give it many); 0 = --batch-size
    max_routes: Positive = 5000  # refuse a search over more routes than this (a beam search: more routes scored per token)
    beam: Count = 0  # beam search of this width over the route tree instead of the whole route set (both modes); 0 = exhaustive
    groups: Count = 1  # g consecutive layers share one choice (the last group shorter if g does not divide the layers); 0 or 1 = none; budgets still count layers
    dtype: str = "fp32"  # fp32 (exact) | bf16 (autocast on a GPU)
    seed: Count = 0  # random baseline
    out: str = ""  # result folder; default RUN/oracle/<options> (e.g. RUN/oracle-code/big-small for another split)


def parse_budgets(text: str, options: str, n_layer: int, groups: int = 1) -> dict[str, Budget | Schedule]:
    """`0-12,free,6>2` → {"0": Budget, …, "free": Budget, "6>2": Schedule}; DuoError naming a bad item. With
    `groups` g > 1 a count must be met by whole groups (groups.py), and the default list holds the counts that are."""
    try:
        opts = parse_options(options)
    except ValueError as e:
        raise DuoError(str(e)) from None
    three = len(opts) == 3
    make = Budget.exactly_big if options == "big,small" else Budget.exactly_skip
    units = Groups.of(n_layer, groups)
    counts = ",".join(str(k) for k in reachable(units, make, n_layer)) if not units.trivial else f"0-{n_layer}"
    text = text or ("free" if three else f"{counts},free")
    out: dict[str, Budget | Schedule] = {}
    for item in (s.strip() for s in text.split(",")):
        try:
            if item == "free":
                out[item] = Budget.free(opts)
            elif three:
                b, m, s = (int(v) for v in item.split("/"))
                out[item] = Budget.counts(big=b, small=m, skip=s)
            elif ">" in item:
                a, b = (int(v) for v in item.split(">"))
                out[item] = Schedule("big" if options == "big,small" else "skip", a, b)
            elif "-" in item.lstrip("-"):
                a, b = (int(v) for v in item.split("-"))
                if a > b:
                    raise ValueError
                out.update({str(k): make(k) for k in range(a, b + 1)})
            else:
                out[str(int(item))] = make(int(item))
        except ValueError:
            want = "b/m/s counts or free" if three else "a count, a range a-b, a schedule a>b, or free"
            raise DuoError(f"bad budget {item!r} for --options {options}: expected {want}") from None
    for label, b in out.items():
        try:
            b.check(n_layer)
        except ValueError:
            raise DuoError(f"budget {label!r} cannot be met by a {n_layer}-layer model") from None
        if isinstance(b, Schedule):  # every count the schedule passes through
            lo, hi = sorted((b.start, b.end))
            for k in range(lo, hi + 1):
                units.check(make(k), f"{label!r} (at {k})")
        else:
            units.check(b, repr(label))
    return out


def _summary(cmd: OracleSpec, res, budgets, modes, extra: dict) -> dict:
    rows = []
    for label in budgets:
        ran = [m for m in modes if f"{m}/{label}" in res.loss]  # the causal oracle may run for some budgets only
        row = {"k": int(label) if label.isdigit() else label, "ppl_oracle": ppl(res.loss[f"{ran[-1]}/{label}"])}
        row["ppl_fixed"] = ppl(res.loss[f"fixed/{label}"])
        row["ppl_random_best"] = ppl(res.loss[f"random/{label}"]) if f"random/{label}" in res.loss else None
        for m in ran:
            row[f"ppl_oracle_{m}"] = ppl(res.loss[f"{m}/{label}"])
        f = res.fixed[label]
        row["fixed_route"] = format_route(f) if f.dim() == 1 else [format_route(r) for r in f]
        row["n_routes"] = res.n_routes[label]
        if label in res.trials:
            t = torch.tensor(res.trials[label]).exp()  # per-trial ppl
            row["random_trials"] = {"n": len(t), "ppl_min": float(t.min()), "ppl_median": float(t.median()), "ppl_max": float(t.max())}
        rows.append(row)
    return {
        "mode": modes[-1],
        "modes": list(modes),
        "options": cmd.options,
        "ppl_all_big": ppl(res.loss["all-big"]),
        "ppl_all_small": ppl(res.loss["all-small"]),
        "budgets": rows,
        **extra,
    }


def write_table(path: Path, res, windows: torch.Tensor, tok) -> None:
    """tokens.jsonl.gz: one row per predicted token (see the module docstring)."""
    N, T = windows.shape
    pieces = {i: tok.decode([i]) for i in windows[:, 1:].unique().tolist()}
    loss = {k: v.tolist() for k, v in res.loss.items()}
    route = {k: v for k, v in res.route.items()}
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for n in range(N):
            ids = windows[n].tolist()
            for t in range(T - 1):
                row = {"seq": n, "pos": t, "token": ids[t + 1], "text": pieces[ids[t + 1]]}
                row.update({f"loss/{k}": round(v[n][t], 5) for k, v in loss.items()})
                row.update({f"route/{k}": format_route(v[n, t]) for k, v in route.items()})
                f.write(json.dumps(row) + "\n")


def _subset(flag: str, text: str, budgets: dict, cmd: OracleSpec, n_layer: int) -> set[str] | None:
    """The budget labels of --causal-budgets / --random-budgets (None = all); DuoError if one is not in --budgets."""
    if not text:
        return None
    labels = set(parse_budgets(text, cmd.options, n_layer, cmd.groups))
    if labels - set(budgets):
        raise DuoError(f"--{flag}-budgets {', '.join(sorted(labels - set(budgets)))} not in --budgets {cmd.budgets or 'default'}")
    return labels


def run_oracle(cmd: OracleSpec, progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Sweep, write `out` (the module docstring's files) and return the summary; `log` gets the size of the work
    before it starts, `progress` shows a bar on stderr."""
    modes = {"shared": ("shared",), "causal": ("shared", "causal")}.get(cmd.mode)
    if modes is None:
        raise DuoError(f"--mode must be shared or causal, got {cmd.mode!r}")
    if cmd.random < 0 or cmd.seqs < 1 or cmd.batch_size < 1 or cmd.causal_batch_size < 0 or cmd.beam < 0:
        raise DuoError("--random, --causal-batch-size and --beam must be >= 0, and --seqs and --batch-size >= 1")
    check_dtype(cmd.dtype)
    d = distributed.init("auto")
    cfg, model, tok = load_run(Path(cmd.run), d.device)
    L = cfg.model.n_layer
    units = Groups.of(L, cmd.groups)  # DuoError for --groups outside 0..L
    budgets = parse_budgets(cmd.budgets, cmd.options, L, cmd.groups)
    if cmd.causal_budgets and cmd.mode != "causal":
        raise DuoError("--causal-budgets needs --mode causal")
    causal, rand = (
        _subset(flag, text, budgets, cmd, L)
        for flag, text in (("causal", cmd.causal_budgets), ("random", cmd.random_budgets if cmd.random else ""))
    )  # --random 0: no trials, no budgets to check
    seq_len = cmd.seq_len or cfg.train.seq_len
    if seq_len < 2 or seq_len > cfg.model.max_seq_len:
        raise DuoError(f"--seq-len must be in 2..{cfg.model.max_seq_len}, got {seq_len}")
    source = cmd.data or cmd.split or cfg.data.val
    windows = pick_windows(eval_windows(token_array(source, tok), seq_len), cmd.seqs, cmd.pick)  # (N, T)
    est = work(budgets, L, len(windows), seq_len - 1, modes, cmd.random, causal, rand, cmd.beam, cmd.groups)
    walk = shared_work(walk_budgets(budgets, seq_len - 1), L, cmd.beam, units)
    what = f"the beam search scores up to {walk} routes per token" if cmd.beam else f"the search covers {walk} routes"
    if walk > cmd.max_routes:
        raise DuoError(f"{what}, more than --max-routes {cmd.max_routes}; narrow --budgets or raise --max-routes")
    total = sum(est.values())
    if log and d.is_main:
        how = (f"beam {cmd.beam}, up to {walk} routes per token" if cmd.beam else f"{walk} routes in the walk") + (
            f", groups of {units} layers" if not units.trivial else ""
        )
        log(
            f"oracle: {len(windows)} windows x {seq_len} tokens, {how}; work {total:.3g} route-tokens ({', '.join(f'{k} {v:.3g}' for k, v in est.items())})"
        )
    lo, hi = len(windows) * d.rank // d.world, len(windows) * (d.rank + 1) // d.world
    extra = {
        "split": source,
        "seqs": len(windows),
        "pick": cmd.pick,
        "seq_len": seq_len,
        "tokens": int(windows[:, 1:].numel()),
        "n_layer": L,
    }
    extra.update({"random": cmd.random, "seed": cmd.seed, "dtype": cmd.dtype, "ranks": d.world})
    extra.update({"beam": cmd.beam, "groups": max(cmd.groups, 1)})
    out = Path(cmd.out) if cmd.out else Path(cmd.run) / "oracle" / cmd.options.replace(",", "-")
    t0 = time.perf_counter()

    def partial(res, phase: str) -> None:  # a lease can end before the sweep does: keep the numbers so far
        res = gather(res)  # every rank takes part
        if d.is_main:
            seconds = round(time.perf_counter() - t0, 2)
            s = _summary(cmd, res, budgets, modes, {**extra, "seconds": seconds, "partial": f"up to {phase}"})
            write_json(out.with_name(f"{out.name}.partial-summary.json"), s)

    with tqdm(total=total, unit="rt", unit_scale=True, disable=not (progress and d.is_main), file=sys.stderr) as bar:
        with autocast(cmd.dtype, d.device):
            res = sweep(
                model,
                windows[lo:hi],
                budgets,
                modes,
                cmd.random,
                cmd.seed,
                cmd.batch_size,
                d.rank,
                lambda n: bar.update(n * d.world),
                causal,
                cmd.causal_batch_size,
                rand,
                partial,
                cmd.beam,
                cmd.groups,
            )
    res = gather(res)
    summary = _summary(cmd, res, budgets, modes, {**extra, "seconds": round(time.perf_counter() - t0, 2)})
    if d.is_main:
        save(out, summary, res, windows, tok)
        out.with_name(f"{out.name}.partial-summary.json").unlink(missing_ok=True)
    distributed.shutdown(d)
    return summary


def save(folder: Path, summary: dict, res, windows, tok) -> None:
    """Write into a fresh temporary folder, then swap it in for the old one."""
    with atomic_folder(folder) as tmp:
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        write_table(tmp / "tokens.jsonl.gz", res, windows, tok)

"""The commands that reproduce a run's files, as the report lists them: `duollm oracle` for an oracle folder, and
`duollm router train` / `router eval` for a router, with the flags that differ from the defaults."""

from __future__ import annotations

import shlex
from pathlib import Path

from duollm.analysis.routers import Router


def budget_list(labels: list[str]) -> str:
    """Budget labels as `duollm oracle --budgets` takes them, runs of counts joined: 0,1,2,free → 0-2,free."""
    items: list = []
    for lab in labels:
        if lab.isdigit() and items and isinstance(items[-1], list) and int(lab) == items[-1][1] + 1:
            items[-1][1] = int(lab)
        else:
            items.append([int(lab), int(lab)] if lab.isdigit() else lab)
    return ",".join(x if isinstance(x, str) else f"{x[0]}-{x[1]}" if x[1] > x[0] else str(x[0]) for x in items)


def source_flag(split: str) -> str:
    """` --split NAME` for a built-in split, ` --data PATH` for a user's file or folder."""
    return f" --data {shlex.quote(split)}" if "/" in split or Path(split).suffix else f" --split {shlex.quote(split)}"


def oracle_command(run: str, s: dict) -> str:
    """The `duollm oracle` command line that writes a folder like the one summarised by `s`."""
    q = shlex.quote
    cmd = f"duollm oracle --run {q(run)} --options {s['options']} --budgets {q(budget_list([str(r['k']) for r in s['budgets']]))}"
    cmd += f" --mode {s.get('mode', 'shared')}"
    causal = [str(r["k"]) for r in s["budgets"] if "ppl_oracle_causal" in r]
    if s.get("mode") == "causal" and len(causal) < len(s["budgets"]):
        cmd += f" --causal-budgets {q(budget_list(causal))}"
    rand = [str(r["k"]) for r in s["budgets"] if r.get("ppl_random_best") is not None]
    if s.get("random") and len(rand) < len(s["budgets"]):
        cmd += f" --random-budgets {q(budget_list(rand))}"
    for key in ("random", "seqs", "seq_len"):
        if key in s:
            cmd += f" --{key.replace('_', '-')} {s[key]}"
    if s.get("pick", "first") != "first":
        cmd += f" --pick {s['pick']}"
    split = str(s.get("split", ""))
    if split:
        cmd += source_flag(split)
    if s.get("seed", 0):
        cmd += f" --seed {s['seed']}"
    if s.get("dtype", "fp32") != "fp32":
        cmd += f" --dtype {s['dtype']}"
    return cmd


# the defaults of RouterTrainSpec (duollm/train/router_spec.py), repeated since analysis imports no torch code;
# tests/analysis/test_routers.py checks that they agree
TRAIN_DEFAULTS = {
    "kind": "paper",
    "budget": "0.5",
    "options": "big,small",
    "name": "",
    "steps": 300,
    "lr": 1e-2,
    "batch_size": 16,
    "alpha": 10.0,
    "beta_max": 20.0,
    "train_base": False,
    "labels": "causal",
    "head": "route",
    "values": "flip",
    "shrink": False,
    "tune": 0,
    "label_seqs": 64,
    "label_batch_size": 64,
    "calib_seqs": 16,
    "seq_len": 0,
    "dtype": "fp32",
    "seed": 0,
}


def router_commands(run: str, r: Router, summary: dict | None) -> list[str]:
    """The `duollm router train` line that makes router `r` and a `duollm router eval` line per evaluation."""
    q = shlex.quote
    saved = r.info.get("config")
    cfg = {
        **TRAIN_DEFAULTS,
        **(saved if isinstance(saved, dict) else {}),
        "kind": r.kind,
        "budget": str(r.info.get("budget", "")),
        "options": r.options,
    }
    cmd = f"duollm router train --run {q(run)} --kind {q(r.kind)} --budget {q(cfg['budget'])}"
    cmd += "" if r.options == "big,small" else f" --options {r.options}"
    default_name = f"{r.kind}-{cfg['budget']}" + ("" if r.options == "big,small" else f"-{r.options.replace(',', '-')}")
    cmd += "" if r.name == default_name else f" --name {q(r.name)}"
    for key, default in TRAIN_DEFAULTS.items():
        if key in ("kind", "budget", "options", "name") or cfg[key] == default:
            continue
        cmd += f" --{key.replace('_', '-')}" + ("" if isinstance(default, bool) else f" {q(str(cfg[key]))}")
    cmds = [cmd]
    for ev in r.evals.values():
        line = f"duollm router eval --run {q(run)} --name {q(r.name)}"
        if not ev.same_windows(summary):  # `router eval` takes the oracle's windows unless told otherwise
            line += source_flag(ev.split) + f" --seqs {ev.result['seqs']} --seq-len {ev.result['seq_len']}"
            line += f" --pick {ev.result['pick']}" if ev.result.get("pick", "first") != "first" else ""
        default = (summary or {}).get("dtype", "fp32") if ev.same_windows(summary) else "fp32"  # `router eval` follows the oracle's
        line += f" --dtype {ev.result['dtype']}" if ev.result.get("dtype", default) != default else ""
        cmds.append(line)
    return cmds

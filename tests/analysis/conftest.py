"""A hand-made run directory: the files `duollm oracle` and `duollm router train/eval` write, with known values,
and no model. 2 windows x 6 predicted positions, 4 layers. Run: pytest tests/analysis"""

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

L = 4
TEXT = [["The", " cat", " sat", " on", " the", " mat"], ["A", " dog", " <ran>", " &", "\n", " end"]]
SMALL = np.array([[3.0, 2.0, 5.0, 1.0, 4.0, 6.5], [2.5, 7.0, 0.5, 3.5, 8.0, 2.0]])  # (2, 6) loss(all-small)
GAIN = np.array([[1.0, 0.0, 2.0, 0.5, 0.0, 3.0], [0.2, 4.0, 0.0, 1.0, 0.5, 0.1]])  # (2, 6) what the free oracle gains
LABELS = ["0", "1", "2", "3", "4", "free", "3>1"]


def rotated(k: int, n: int, t: int, on: str, off: str) -> str:
    """A route with `k` layers `on`, starting at layer n + t and wrapping: token (n, t) of the fixture."""
    return "".join(on if (layer - n - t) % L < k else off for layer in range(L))


def oracle_loss(label: str, scale: float = 1.0) -> np.ndarray:
    """Oracle loss (2, 6): the free oracle gains GAIN, budget k gains GAIN * k / L, the schedule as k = 2."""
    frac = {"free": 1.0, "3>1": 0.5}.get(label) or int(label) / L
    return SMALL - scale * frac * GAIN


def write_oracle(run: Path, options: str, modes: tuple[str, ...] = ("shared", "causal"), reverse: bool = False) -> Path:
    """RUN/oracle/<options>/{summary.json, tokens.jsonl.gz} as duollm/oracle/job.py writes them."""
    on, off = ("B", "S") if options == "big,small" else ("-", "B")
    folder = run / "oracle" / options.replace(",", "-")
    folder.mkdir(parents=True)
    loss = {"all-big": SMALL - 0.25, "all-small": SMALL}
    route = {}
    for label in LABELS:
        k = 2 if label in ("free", "3>1") else int(label)
        for m, scale in zip(modes, (1.0, 0.9), strict=False):
            loss[f"{m}/{label}"] = oracle_loss(label, scale)
            route[f"{m}/{label}"] = [[rotated(k, n, t, on, off) for t in range(6)] for n in range(2)]
        loss[f"fixed/{label}"] = SMALL - 0.1 * k
        loss[f"random/{label}"] = SMALL - 0.05 * k
        route[f"random/{label}"] = [[on * k + off * (L - k)] * 6 for _ in range(2)]
    rows = []
    for n in range(2):
        for t in range(6):
            row = {"seq": n, "pos": t, "token": 10 * n + t, "text": TEXT[n][t]}
            row.update({f"loss/{c}": round(float(v[n, t]), 5) for c, v in loss.items()})
            row.update({f"route/{c}": v[n][t] for c, v in route.items()})
            rows.append(row)
    with gzip.open(folder / "tokens.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in (rows[::-1] if reverse else rows))

    def ppl(c: str) -> float:
        return math.exp(float(loss[c].mean()))

    budgets = []
    for label in LABELS:
        k = 2 if label in ("free", "3>1") else int(label)
        b = {"k": int(label) if label.isdigit() else label, "ppl_oracle": ppl(f"{modes[-1]}/{label}"), "ppl_fixed": ppl(f"fixed/{label}")}
        b["ppl_random_best"] = ppl(f"random/{label}")
        b.update({f"ppl_oracle_{m}": ppl(f"{m}/{label}") for m in modes})
        fixed = on * k + off * (L - k)
        b.update({"fixed_route": [fixed] * 6 if label == "3>1" else fixed, "n_routes": math.comb(L, k)})
        budgets.append(b)
    summary = {
        "mode": modes[-1],
        "modes": list(modes),
        "options": options,
        "ppl_all_big": ppl("all-big"),
        "ppl_all_small": ppl("all-small"),
    }
    summary.update({"budgets": budgets, "split": "synthetic-val", "seqs": 2, "seq_len": 7, "tokens": 12, "n_layer": L})
    summary.update({"random": 3, "seed": 0, "dtype": "fp32", "ranks": 1, "seconds": 0.1})
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return folder


PAPER_LOSS = SMALL - 0.3 * GAIN  # (2, 6) loss of the paper router: between fixed and the causal oracle at k = 2
SUPERVISED_LOSS = SMALL - 0.4 * GAIN  # (2, 6) and of the supervised one
PAPER_ROUTES = [["BBSS"] * 6, ["BSSS"] * 6]  # seq 0 takes 2 BIG layers, seq 1 one: realised big 0.375
SUPERVISED_ROUTES = [[rotated(2, n, t, "B", "S") for t in range(6)] for n in range(2)]  # the shared oracle's k = 2 routes


def realized(routes: list[list[str]]) -> dict[str, float]:
    letters = "".join("".join(r) for r in routes)
    return {name: letters.count(c) / len(letters) for name, c in (("big", "B"), ("small", "S"), ("skip", "-"))}


def write_router(
    run: Path,
    name: str,
    kind: str,
    target: dict[str, float],
    loss: np.ndarray | None = None,
    routes: list[list[str]] | None = None,
    options: str = "big,small",
    split: str = "synthetic-val",
    config: dict | None = None,
) -> Path:
    """RUN/routers/NAME/router.json as `duollm router train` writes it and, given a loss (2, 6) and routes [2][6],
    eval-<split>.json and tokens-<split>.jsonl.gz as `duollm router eval` writes them (against the oracle's k row
    when the split is the oracle's)."""
    folder = run / "routers" / name
    folder.mkdir(parents=True)
    budget = str(target["skip" if options == "big,skip" else "big"])
    info = {"class": "linear" if kind == "paper" else "route", "kind": kind, "name": name, "budget": budget, "options_flag": options}
    info.update(
        {
            "target": target,
            "calibration": {"seqs": 16, "realized": target},
            "train": {"steps": 100, "first_loss": 4.0, "final_loss": 3.0, "seconds": 1.5},
        }
    )
    info.update({"config": {"kind": kind, "budget": budget, "options": options, "name": "", "steps": 100, **(config or {})}})
    info.update({"options": options.split(",")[::-1], "n_layer": L, "d_model": 8})
    (folder / "router.json").write_text(json.dumps(info, indent=1))
    if loss is None:
        return folder
    rows = [
        {"seq": n, "pos": t, "token": 10 * n + t, "loss": round(float(loss[n, t]), 5), "route": routes[n][t]}
        for n in range(2)
        for t in range(6)
    ]
    with gzip.open(folder / f"tokens-{split}.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    ppl = math.exp(float(np.mean([r["loss"] for r in rows])))
    res = {"kind": kind, "name": name, "target": target, "realized": realized(routes), "ppl": ppl, "gap_recovered": None}
    res.update({"split": split, "seqs": 2, "seq_len": 7, "tokens": 12})
    summary = run / "oracle" / options.replace(",", "-") / "summary.json"
    s = json.loads(summary.read_text()) if summary.is_file() else {}
    k = str(round(target["skip" if options == "big,skip" else "big"] * L))
    row = next((b for b in s.get("budgets", []) if str(b["k"]) == k), None) if split == s.get("split") else None
    if row and "ppl_oracle_causal" in row:
        res.update({"k": row["k"], "ppl_fixed": row["ppl_fixed"], "ppl_causal_oracle": row["ppl_oracle_causal"]})
        res["gap_recovered"] = (row["ppl_fixed"] - ppl) / (row["ppl_fixed"] - row["ppl_oracle_causal"])
    (folder / f"eval-{split}.json").write_text(json.dumps(res, indent=1))
    return folder


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run with big,small (shared and causal oracles) and big,skip (shared only) results, and two big,small
    routers at budget 0.5 (k = 2 of 4 BIG layers), both evaluated on the oracle's windows."""
    run = tmp_path / "run"
    write_oracle(run, "big,small")
    write_oracle(run, "big,skip", modes=("shared",))
    write_router(run, "paper-0.5", "paper", {"big": 0.5, "small": 0.5}, PAPER_LOSS, PAPER_ROUTES)
    write_router(run, "supervised-0.5", "supervised", {"big": 0.5, "small": 0.5}, SUPERVISED_LOSS, SUPERVISED_ROUTES)
    return run

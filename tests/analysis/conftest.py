"""A hand-made run directory: the files `duollm oracle` writes, with known values, and no model.
2 windows x 6 predicted positions, 4 layers. Run: pytest tests/analysis"""

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
    """RUN/oracle/<options>/{summary.json, tokens.jsonl.gz} as duollm/oracle/command.py writes them."""
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


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run with big,small (shared and causal oracles) and big,skip (shared only) results."""
    run = tmp_path / "run"
    write_oracle(run, "big,small")
    write_oracle(run, "big,skip", modes=("shared",))
    return run

"""An oracle folder read into numpy: `RUN/oracle/<options>/summary.json` and `tokens.jsonl.gz`.

`duollm oracle` (duollm/oracle/job.py) writes one JSON row per predicted token. Here the rows become
grids: per column a loss array `(N, T-1)` (float64, nats) and, where the column has routes, a route array
`(N, T-1, L)` (uint8), with N the windows and T-1 the predicted positions of each. Route letters map to the
values of `Choice` (duollm/routing/route.py): `-` = SKIP = 0, `S` = SMALL = 1, `B` = BIG = 2. Analysis reads
files only; no analysis module imports the model or torch itself (tests/analysis checks), so the values are
repeated here.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duollm.errors import DuoError

SKIP, SMALL, BIG = 0, 1, 2  # the values of duollm.routing.route.Choice
LETTERS = "-SB"  # LETTERS[choice] is the letter of a route string
OPTIONS = ("big,small", "big,skip", "big,small,skip")  # the folders `duollm oracle --options` writes
SUMMARY_KEYS = ("options", "modes", "n_layer", "ppl_all_big", "ppl_all_small", "budgets")


@dataclass
class OracleTable:
    """One oracle folder as arrays. Columns: `all-big`, `all-small`, and `MODE/K` for MODE shared, causal, fixed, random."""

    folder: Path  # RUN/oracle/<options>
    summary: dict  # summary.json as written
    token: np.ndarray  # (N, T-1) int64: id of the predicted token (window position pos+1)
    text: list[list[str]]  # [N][T-1]: its decoded text piece
    loss: dict[str, np.ndarray]  # column → (N, T-1) float64 next-token loss
    route: dict[str, np.ndarray]  # column → (N, T-1, L) uint8 choices

    @property
    def n_layer(self) -> int:
        return int(self.summary["n_layer"])

    @property
    def options(self) -> str:
        return str(self.summary["options"])

    def labels(self, mode: str) -> list[str]:
        """Budget labels with a `<mode>/<label>` loss column, in the file's order."""
        return [c.split("/", 1)[1] for c in self.loss if c.startswith(f"{mode}/")]

    def column(self, mode: str, budget: str) -> str:
        """`<mode>/<budget>`, or DuoError listing what the folder holds."""
        name = f"{mode}/{budget}"
        if name in self.loss:
            return name
        modes = sorted({c.split("/")[0] for c in self.loss if "/" in c})
        if mode not in modes:
            hint = " (run `duollm oracle --mode causal`)" if mode == "causal" else ""
            raise DuoError(f"{self.folder} has no {mode!r} oracle{hint}; modes present: {', '.join(modes)}")
        raise DuoError(f"{self.folder} has no {mode} oracle for budget {budget!r}; budgets present: {', '.join(self.labels(mode))}")


def oracle_folder(run: str | Path, options: str) -> Path:
    if options not in OPTIONS:
        raise DuoError(f"--options must be one of {', '.join(OPTIONS)}, got {options!r}")
    return Path(run) / "oracle" / options.replace(",", "-")


def options_present(run: str | Path) -> list[str]:
    """The options whose oracle folder holds a summary.json, in the order of OPTIONS."""
    return [o for o in OPTIONS if (oracle_folder(run, o) / "summary.json").is_file()]


def _redo(run: str | Path, options: str) -> str:
    return f"run `duollm oracle --run {run} --options {options}`"


def read_summary(run: str | Path, options: str = "big,small", partial: bool = False) -> dict:
    """summary.json of an oracle folder; DuoError naming the file and the command to run when it is unusable.

    `partial`: where the folder has no summary yet, the one a sweep cut short left beside it
    (`<folder>.partial-summary.json`, with key `partial`), if any."""
    folder = oracle_folder(run, options)
    path = folder / "summary.json"
    if not Path(run).is_dir():
        raise DuoError(f"{run} is not a directory (expected a run directory)")
    cut = folder.with_name(f"{folder.name}.partial-summary.json")
    if partial and not path.is_file() and cut.is_file():
        path = cut
    if not path.is_file():
        raise DuoError(f"{path} not found: {_redo(run, options)} first")
    try:
        s = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DuoError(f"{path} is not valid JSON ({e}); {_redo(run, options)} again") from None
    missing = [k for k in SUMMARY_KEYS if not isinstance(s, dict) or k not in s]
    if missing:
        raise DuoError(f"{path} lacks {', '.join(missing)}; {_redo(run, options)} again")
    return s


def read_rows(path: Path, redo: str) -> list[dict]:
    if not path.is_file():
        raise DuoError(f"{path} not found: {redo} first")
    rows = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DuoError(f"{path} line {i} is not a JSON object; {redo} again")
                rows.append(row)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DuoError(f"{path} is not a readable gzip file ({e}); {redo} again") from None
    except json.JSONDecodeError as e:
        raise DuoError(f"{path} line {i} is not valid JSON ({e.msg}); {redo} again") from None
    if not rows:
        raise DuoError(f"{path} holds no rows; {redo} again")
    return rows


def grid(rows: list[dict], path: Path, redo: str) -> tuple[list[dict], int, int]:
    """The rows in seq-major order and the grid's N windows x P positions; DuoError unless they fill it once."""
    try:
        seq = np.array([r["seq"] for r in rows], dtype=np.int64)  # (R,)
        pos = np.array([r["pos"] for r in rows], dtype=np.int64)  # (R,)
    except (KeyError, TypeError, ValueError):
        raise DuoError(f"{path}: every row needs integer seq and pos; {redo} again") from None
    N, P = int(seq.max()) + 1, int(pos.max()) + 1
    slot = seq * P + pos  # (R,) flat index of each row in the (N, T-1) grid
    if seq.min() < 0 or pos.min() < 0 or len(rows) != N * P or np.unique(slot).size != len(rows):
        raise DuoError(f"{path}: rows do not form a full (seq, pos) grid of {N} x {P}; {redo} again")
    return [rows[i] for i in np.argsort(slot)], N, P


def parse_routes(strings: list[str], n_layer: int) -> np.ndarray:
    """Route strings → (len, L) uint8 choices; ValueError on a bad letter or length."""
    if any(len(s) != n_layer for s in strings):
        bad = next(s for s in strings if len(s) != n_layer)
        raise ValueError(f"route {bad!r} does not have {n_layer} layers")
    lut = np.full(256, 255, dtype=np.uint8)  # byte → choice; 255 marks a letter that is none of B, S, -
    for choice, letter in enumerate(LETTERS):
        lut[ord(letter)] = choice
    try:
        raw = np.frombuffer("".join(strings).encode("ascii"), dtype=np.uint8)  # (len * L,)
    except UnicodeEncodeError:
        raise ValueError("a route holds a letter other than B, S, -") from None
    out = lut[raw]
    if (out == 255).any():
        raise ValueError(f"a route holds {chr(raw[out == 255][0])!r}; letters are B (big), S (small), - (skip)")
    return out.reshape(len(strings), n_layer)


def read_table(run: str | Path, options: str = "big,small") -> OracleTable:
    """Both files of `RUN/oracle/<options>/` as arrays; DuoError when missing or malformed."""
    summary = read_summary(run, options)
    folder, redo = oracle_folder(run, options), _redo(run, options)
    path = folder / "tokens.jsonl.gz"
    rows = read_rows(path, redo)
    L = int(summary["n_layer"])
    rows, N, P = grid(rows, path, redo)
    loss_cols = [k for k in rows[0] if k.startswith("loss/")]
    route_cols = [k for k in rows[0] if k.startswith("route/")]
    try:
        token = np.array([r["token"] for r in rows], dtype=np.int64).reshape(N, P)
        texts = [str(r["text"]) for r in rows]
        loss = {k[5:]: np.array([r[k] for r in rows], dtype=np.float64).reshape(N, P) for k in loss_cols}
        route = {k[6:]: parse_routes([r[k] for r in rows], L).reshape(N, P, L) for k in route_cols}
    except KeyError as e:
        raise DuoError(f"{path}: a row lacks {e.args[0]!r}; {redo} again") from None
    except (TypeError, ValueError) as e:
        raise DuoError(f"{path}: malformed value ({e}); {redo} again") from None
    for need in ("all-big", "all-small"):
        if need not in loss:
            raise DuoError(f"{path} has no loss/{need} column; {redo} again")
    text = [texts[n * P : (n + 1) * P] for n in range(N)]
    return OracleTable(folder=folder, summary=summary, token=token, text=text, loss=loss, route=route)


def group_counts(n_layer: int, groups: int = 1) -> list[int]:
    """The layer counts whole groups of `groups` consecutive layers add up to (the last group shorter when `groups`
    does not divide `n_layer`; 0 or 1: one per layer), as `duollm oracle --groups` meets budgets: 30, 3 → 0, 3, …, 30."""
    g = max(groups, 1)
    sizes = [g] * (n_layer // g) + ([n_layer % g] if n_layer % g else [])
    sums = {0}
    for s in sizes:
        sums |= {x + s for x in sums}
    return sorted(sums)


def usage_ks(n_layer: int, groups: int = 1) -> list[int]:
    """k ≈ L/3, L/2, 2L/3 (rounded half up), distinct and within 1..L-1: 12 layers → [4, 6, 8]. With route groups,
    the nearest counts whole groups reach (ties to the lower): 30 layers in groups of 3 → [9, 15, 21]."""
    reach = [k for k in group_counts(n_layer, groups) if 1 <= k <= n_layer - 1]
    ks = {(2 * n_layer + 3) // 6, (n_layer + 1) // 2, (4 * n_layer + 3) // 6}
    return sorted({min(reach, key=lambda r: (abs(r - k), r)) for k in ks if 1 <= k <= n_layer - 1} if reach else set())


def usage(route: np.ndarray, choice: int = BIG) -> np.ndarray:
    """Fraction of sequences whose route takes `choice` at each (layer, position): (N, T-1, L) → (L, T-1)."""
    return (route == choice).mean(axis=0).T  # (L, T-1)


def spread(route: np.ndarray, gain: np.ndarray | None = None, choice: int = BIG) -> tuple[np.ndarray, np.ndarray | None]:
    """How a policy spreads `choice` over tokens: (N, T-1, L) routes → the share of tokens taking 0..L of `choice`
    (L+1,), and, given a per-token (N, T-1) `gain`, its mean over the tokens of each count (L+1,; NaN where none).
    With gain = loss(all-small) − loss(all-big), it shows whether the tokens given more BIG layers need them more."""
    count = (route == choice).sum(-1).ravel()  # (N·(T-1),)
    n = np.bincount(count, minlength=route.shape[-1] + 1)
    if gain is None:
        return n / count.size, None
    total = np.bincount(count, weights=gain.ravel(), minlength=route.shape[-1] + 1)
    return n / count.size, np.where(n > 0, total / np.maximum(n, 1), np.nan)

"""Trained routers read into numpy: `RUN/routers/<name>/router.json` and, per evaluated split, `eval-<split>.json`
and `tokens-<split>.jsonl.gz`.

`duollm router train` (duollm/train/router.py) writes `router.json`: `class`, `kind` (paper | supervised),
`name`, `budget`, `options_flag`, `target` (fraction of the (token, layer) choices per choice name), `n_layer`, ...
`duollm router eval --run RUN --name NAME` writes beside it `eval-<split>.json` (`ppl`, `realized` fractions,
`gap_recovered`, `split`, `seqs`, `seq_len`, and `k`, `ppl_fixed`, `ppl_causal_oracle` when an oracle summary
matched) and `tokens-<split>.jsonl.gz`: one row per predicted token, `seq`, `pos`, `token`, `loss` and `route`
(a B/S/- string). The rows become a loss array `(N, T-1)` and a route array `(N, T-1, L)` (uint8, the letters
of table.py). A router evaluated on the oracle's split with the oracle's window count and length saw the
oracle's windows, so its arrays line up with the oracle table's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duollm.analysis.table import OPTIONS, grid, parse_routes, read_rows
from duollm.errors import DuoError

KINDS = ("paper", "supervised")  # the kinds `duollm router train --kind` takes, in the report's order
ROUTER_KEYS = ("kind", "name", "options_flag", "target", "n_layer")
EVAL_KEYS = ("name", "target", "realized", "ppl", "split", "seqs", "seq_len")
WINDOW_KEYS = ("split", "seqs", "seq_len", "pick")  # equal in an eval and an oracle summary: the same windows


def window_key(result: dict) -> tuple:
    """An eval's or an oracle summary's WINDOW_KEYS values (files from before --pick took the first windows)."""
    return tuple(result.get(k, "first" if k == "pick" else None) for k in WINDOW_KEYS)


WHOLE = 0.05  # a budget this close to a whole number of layers is that number: 0.333 of 12 layers is 4 (3.996)


def whole_layers(layers: float) -> int | None:
    """`layers` (fraction × L) as a whole count of layers, or None when it is not one (1.2)."""
    n = round(layers)
    return n if abs(layers - n) < WHOLE else None


COUNTED = {"big,small": ("big",), "big,skip": ("skip",), "big,small,skip": ("big", "small", "skip")}  # choices a budget counts


@dataclass
class RouterEval:
    """One `eval-<split>.json` with its tokens file as arrays."""

    path: Path  # RUN/routers/<name>/eval-<split>.json
    result: dict  # the JSON as written
    token: np.ndarray  # (N, T-1) int64: id of the predicted token
    loss: np.ndarray  # (N, T-1) float64 next-token loss under the router
    route: np.ndarray  # (N, T-1, L) uint8 choices

    @property
    def split(self) -> str:
        return str(self.result["split"])

    @property
    def ppl(self) -> float:
        return float(self.result["ppl"])

    def same_windows(self, summary: dict | None) -> bool:
        """Whether it ran on the windows of the oracle summarised by `summary` (same split, count and length)."""
        return summary is not None and window_key(self.result) == window_key(summary)


@dataclass
class Router:
    """One router folder: its router.json and every evaluation found beside it."""

    folder: Path  # RUN/routers/<name>
    info: dict  # router.json as written
    evals: dict[str, RouterEval]  # <split> of eval-<split>.json → evaluation, sorted by file name

    @property
    def name(self) -> str:  # what `duollm router eval --name` takes
        return self.folder.name

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    @property
    def options(self) -> str:
        return str(self.info["options_flag"])

    @property
    def n_layer(self) -> int:
        return int(self.info["n_layer"])

    def counts(self) -> tuple[float, ...]:
        """Target layers per token of each counted choice (COUNTED): fraction x L, e.g. (2.0,) for big 0.5 of 4."""
        return tuple(float(self.info["target"].get(c, 0.0)) * self.n_layer for c in COUNTED[self.options])

    def budget_label(self) -> str:
        """The oracle's label of the same budget (`2`, `2/1/1`) when the target is whole layers (`whole_layers`),
        else the counts (`1.5`)."""
        counts = self.counts()
        if all(whole_layers(c) is not None for c in counts):
            n = [whole_layers(c) for c in counts]
            return str(n[0]) if len(n) == 1 else f"{n[0]}/{self.n_layer - n[0] - n[2]}/{n[2]}"
        return "/".join(f"{c:g}" for c in counts)

    def matching_eval(self, summary: dict | None) -> RouterEval | None:
        """The evaluation on the windows, and at the precision, of the oracle summarised by `summary`, if any."""
        dtype = (summary or {}).get("dtype", "fp32")
        return next((e for e in self.evals.values() if e.same_windows(summary) and e.result.get("dtype", "fp32") == dtype), None)


def _load_json(path: Path, redo: str, keys: tuple[str, ...]) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DuoError(f"{path} is not valid JSON ({e}); {redo} again") from None
    missing = [k for k in keys if not isinstance(d, dict) or k not in d]
    if missing:
        raise DuoError(f"{path} lacks {', '.join(missing)}; {redo} again")
    return d


def _fractions(d, path: Path, key: str, redo: str) -> dict[str, float]:
    if not isinstance(d, dict) or not d or any(k not in ("big", "small", "skip") or not isinstance(v, int | float) for k, v in d.items()):
        raise DuoError(f"{path}: {key} must map big/small/skip to fractions, got {d!r}; {redo} again")
    return d


def read_info(folder: Path) -> dict:
    """router.json of a router folder, checked; DuoError naming the file."""
    path = folder / "router.json"
    redo = f"train it with `duollm router train --run {folder.parent.parent} --name {folder.name}` (and its --kind, --budget)"
    info = _load_json(path, redo, ROUTER_KEYS)
    if info["options_flag"] not in OPTIONS:
        raise DuoError(f"{path}: options_flag must be one of {', '.join(OPTIONS)}, got {info['options_flag']!r}; {redo} again")
    if not isinstance(info["n_layer"], int) or info["n_layer"] < 1:
        raise DuoError(f"{path}: n_layer must be a positive integer, got {info['n_layer']!r}; {redo} again")
    _fractions(info["target"], path, "target", redo)
    return info


def read_eval(folder: Path, path: Path, n_layer: int) -> RouterEval:
    """`eval-<split>.json` and its `tokens-<split>.jsonl.gz` as arrays; DuoError naming the file at fault."""
    redo = f"run `duollm router eval --run {folder.parent.parent} --name {folder.name}`"
    res = _load_json(path, redo, EVAL_KEYS)
    _fractions(res["realized"], path, "realized", redo)
    if not isinstance(res["ppl"], int | float) or not all(isinstance(res[k], int) for k in ("seqs", "seq_len")):
        raise DuoError(f"{path}: ppl must be a number and seqs, seq_len integers; {redo} again")
    if not isinstance(res.get("gap_recovered"), int | float | None):
        raise DuoError(f"{path}: gap_recovered must be a number or null; {redo} again")
    tokens = folder / f"tokens-{path.name[len('eval-') : -len('.json')]}.jsonl.gz"
    rows, N, P = grid(read_rows(tokens, redo), tokens, redo)
    if (N, P) != (res["seqs"], res["seq_len"] - 1):
        raise DuoError(f"{tokens} holds {N} x {P} tokens, {path.name} says {res['seqs']} x {res['seq_len'] - 1}; {redo} again")
    try:
        token = np.array([r["token"] for r in rows], dtype=np.int64).reshape(N, P)
        loss = np.array([r["loss"] for r in rows], dtype=np.float64).reshape(N, P)
        route = parse_routes([r["route"] for r in rows], n_layer).reshape(N, P, n_layer)
    except KeyError as e:
        raise DuoError(f"{tokens}: a row lacks {e.args[0]!r}; {redo} again") from None
    except (TypeError, ValueError) as e:
        raise DuoError(f"{tokens}: malformed value ({e}); {redo} again") from None
    return RouterEval(path=path, result=res, token=token, loss=loss, route=route)


def read_router(folder: Path) -> Router:
    info = read_info(folder)
    evals = {p.name[len("eval-") : -len(".json")]: read_eval(folder, p, int(info["n_layer"])) for p in sorted(folder.glob("eval-*.json"))}
    return Router(folder=folder, info=info, evals=evals)


def read_routers(run: str | Path) -> list[Router]:
    """Every `RUN/routers/<name>/` holding a router.json, sorted by name (none: []); DuoError on a malformed file."""
    return [read_router(p.parent) for p in sorted((Path(run) / "routers").glob("*/router.json"))]

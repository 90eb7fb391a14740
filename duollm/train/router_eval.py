"""`duollm router eval` and `duollm router calibrate`: a saved router scored on held-out text beside the oracle
(perplexity, realised fractions, gap recovered, per-token losses and routes), and a router's offsets set again on
the text it will serve.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import torch

from duollm.analysis.routers import Router, window_key
from duollm.data.corpus import eval_windows, pick_windows, seeded_windows, token_array
from duollm.errors import DuoError
from duollm.eval.evaluate import token_losses
from duollm.eval.policy import Policy
from duollm.files import atomic_path, write_json
from duollm.routers.calibrate import calibrate
from duollm.routers.linear import NAMES, LinearRouter, realised
from duollm.routers.storage import load_named, router_name, save_router
from duollm.routing.route import format_route
from duollm.runs.load import autocast, check_dtype, load_run
from duollm.train.router_spec import RouterCalibrateSpec, RouterEvalSpec


def calibrate_router(cmd: RouterCalibrateSpec) -> dict:
    if cmd.dtype:
        check_dtype(cmd.dtype)
    if cmd.seqs < 1:
        raise DuoError(f"--seqs must be >= 1, got {cmd.seqs}")
    run = Path(cmd.run)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, model, tok = load_run(run, device)
    router, info = load_named(run, cmd.name, device, model)
    if not isinstance(router, LinearRouter):
        raise DuoError(f"router {cmd.name!r} keeps its budget exactly, token by token (a route head): it has nothing to calibrate")
    out = cmd.out or f"{cmd.name}-cal-{Path(cmd.data).name.removesuffix('.jsonl')}"
    folder = run / "routers" / out
    if folder.exists():
        raise DuoError(f"{folder} exists; give the new router another name with --out")
    conf = info.get("config", {})
    T = cmd.seq_len or conf.get("seq_len") or cfg.train.seq_len
    windows = seeded_windows(token_array(cmd.data, tok), cmd.seqs, T, cmd.seed + 1)
    target = {NAMES[c]: v for c, v in info["target"].items()}
    with autocast(cmd.dtype or conf.get("dtype", "fp32"), device):
        real = calibrate(model, router, windows, target)
    meta = {k: v for k, v in info.items() if k != "class"}
    meta["name"] = out
    meta["calibration"] = {"seqs": cmd.seqs, "data": cmd.data, "realized": real, "offset": router.offset.tolist(), "seed": cmd.seed}
    meta["calibrated_from"] = {"name": cmd.name, "calibration": info.get("calibration")}
    save_router(router, folder, meta)
    if (run / "routers" / cmd.name / "model.safetensors").exists():  # a router trained with its base keeps that base
        shutil.copyfile(run / "routers" / cmd.name / "model.safetensors", folder / "model.safetensors")
    return meta


def eval_router(cmd: RouterEvalSpec) -> dict:

    if cmd.dtype:
        check_dtype(cmd.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, model, tok = load_run(Path(cmd.run), device)
    name = cmd.name or router_name(cmd.kind, cmd.budget, cmd.options)
    router, info = load_named(Path(cmd.run), name, device, model)
    opts = info.get("options_flag", "big,small")
    summary_file = (Path(cmd.oracle) if cmd.oracle else Path(cmd.run) / "oracle" / opts.replace(",", "-")) / "summary.json"
    if cmd.oracle and not summary_file.exists():
        raise DuoError(f"--oracle {cmd.oracle} holds no summary.json; run `duollm oracle --out {cmd.oracle}` first")
    oracle = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    source = cmd.data or cmd.split or oracle.get("split") or cfg.data.val
    same = source == oracle.get("split")
    T = cmd.seq_len or (oracle["seq_len"] if same else cfg.train.seq_len)
    n = cmd.seqs or (oracle["seqs"] if same else 0)
    windows = eval_windows(token_array(source, tok), T)
    pick = cmd.pick or (oracle.get("pick", "first") if same else "first")  # by default the oracle's windows
    windows = pick_windows(windows, n, pick) if n else windows
    dtype = cmd.dtype or (oracle.get("dtype", "fp32") if same else "fp32")  # by default the oracle's precision
    with torch.no_grad(), autocast(dtype, device):
        loss, route = token_losses(model, windows, Policy(f"router:{name}", router=router), cmd.batch_size)
    route = route[:, :-1]  # (N, T-1, L): the routes of the predicting tokens, beside loss (N, T-1)
    ppl = math.exp(float(loss.double().mean()))
    res = {"kind": info["kind"], "name": name, "target": info["target"], "realized": realised(route), "ppl": ppl, "gap_recovered": None}
    res.update({"split": source, "seqs": len(windows), "pick": pick, "seq_len": T, "tokens": int(loss.numel()), "dtype": dtype})
    # the oracle row of the same budget; a budget of no whole number of layers (0.3 of 4) has none, and no gap
    k = Router(Path(cmd.run) / "routers" / name, {"options_flag": "big,small", "n_layer": cfg.model.n_layer, **info}, {}).budget_label()
    on_its_windows = oracle and window_key(res) == window_key(oracle) and dtype == oracle.get("dtype", "fp32")
    row = next((b for b in oracle["budgets"] if str(b["k"]) == k), None) if on_its_windows else None
    if row and "ppl_oracle_causal" in row:
        res["k"], res["ppl_fixed"], res["ppl_causal_oracle"] = row["k"], row["ppl_fixed"], row["ppl_oracle_causal"]
        gap = row["ppl_fixed"] - row["ppl_oracle_causal"]
        res["gap_recovered"] = (row["ppl_fixed"] - ppl) / gap if gap > 0 else None
    folder = Path(cmd.run) / "routers" / name
    tag = Path(source).stem  # prose-val, or a file name without its suffix
    write_json(folder / f"eval-{tag}.json", res)
    _write_tokens(folder / f"tokens-{tag}.jsonl.gz", windows, loss, route)
    return res


def _write_tokens(path: Path, windows, loss, route) -> None:
    """Per predicted token: seq, pos, token, loss, route (B/S/- string); written to a temporary name first."""
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        for n in range(len(windows)):
            ids = windows[n].tolist()
            for t in range(loss.shape[1]):
                f.write(
                    json.dumps(
                        {"seq": n, "pos": t, "token": ids[t + 1], "loss": round(float(loss[n, t]), 5), "route": format_route(route[n, t])}
                    )
                    + "\n"
                )

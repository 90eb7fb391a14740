"""`duollm router train|eval|calibrate`: learned routers on a trained run (what each does: train/router.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from duollm.train.router import train_router
from duollm.train.router_eval import calibrate_router, eval_router
from duollm.train.router_spec import RouterCalibrateSpec, RouterEvalSpec, RouterTrainSpec


@dataclass
class RouterTrainCommand(RouterTrainSpec):
    """Train a router (the paper's, or one supervised by the oracle) and calibrate it to the budget."""

    json: bool = False  # print one JSON object instead of a line


@dataclass
class RouterEvalCommand(RouterEvalSpec):
    """Perplexity, realised budget and gap recovered of a trained router on held-out text."""

    json: bool = False  # print one JSON object instead of a line


@dataclass
class RouterCalibrateCommand(RouterCalibrateSpec):
    """Calibrate a trained router again on other text, the domain it will serve, and save it as a new router."""

    json: bool = False  # print the new router's JSON instead of a line


def main_train(cmd: RouterTrainSpec) -> None:
    meta = train_router(cmd, progress=not cmd.json)
    if cmd.json:
        print(json.dumps(meta))
        return
    r, t, c = meta["calibration"]["realized"], meta["train"], meta["config"]
    how = (
        f"loss {t['first_loss']:.4f} → {t['final_loss']:.4f} in {t['steps']} steps"
        if meta["kind"] == "paper"
        else f"fitted on {c['label_seqs']} oracle-labelled windows, held-out {'squared error' if c['head'] == 'layer' else 'loss'} "
        f"{t['first_loss']:.4f} ({'a constant' if c['head'] == 'layer' else 'fixed'}) → {t['final_loss']:.4f}"
    )
    if "shrink" in meta["calibration"]:  # --shrink: the factor, and the decision losses behind it
        cal = meta["calibration"]
        how += (
            f"; scores shrunk by {cal['shrink']} (held-out loss over every route {cal['shrink_losses']['0.0']:.4f} fixed, "
            f"{cal['shrink_losses'][str(cal['shrink'])]:.4f} shrunk)"
            if cal["shrink"]
            else f"; the fixed route (no shrink beat it clearly on held-out tokens: {cal['shrink_losses']['0.0']:.4f} fixed)"
        )
    if "tune" in meta["calibration"]:  # --tune: the paper's steps after the fit
        tune = meta["calibration"]["tune"]
        how += f"; then {tune['steps']} steps of the paper's objective, loss {tune['first_loss']:.4f} → {tune['final_loss']:.4f}"
    print(
        f"router {meta['name']}: {how} ({t['seconds']} s); calibrated realised big {r['big']:.3f} small {r['small']:.3f} skip {r['skip']:.3f}"
    )


def main_calibrate(cmd: RouterCalibrateSpec) -> None:
    meta = calibrate_router(cmd)
    if cmd.json:
        print(json.dumps(meta))
        return
    r, before = meta["calibration"]["realized"], meta["calibrated_from"]["calibration"] or {}
    was = before.get("realized", {})
    print(
        f"router {meta['name']}: {meta['calibrated_from']['name']} calibrated on {cmd.data} ({cmd.seqs} windows): realised big "
        f"{r['big']:.3f} small {r['small']:.3f} skip {r['skip']:.3f}"
        + (f" (on its first calibration text: big {was['big']:.3f} small {was['small']:.3f} skip {was['skip']:.3f})" if was else "")
    )


def main_eval(cmd: RouterEvalSpec) -> None:
    res = eval_router(cmd)
    if cmd.json:
        print(json.dumps(res))
        return
    r = res["realized"]
    gap = f", gap recovered {res['gap_recovered']:.3f}" if res["gap_recovered"] is not None else ""
    print(
        f"router {res['name']} on {res['split']} ({res['tokens']} tokens): ppl {res['ppl']:.2f}{gap}; realised big {r['big']:.3f} small {r['small']:.3f} skip {r['skip']:.3f}"
    )

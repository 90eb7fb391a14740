"""Budget calibration: offsets on a router's hard decisions so that it spends what the budget says.

A router trained towards a target fraction (the paper's penalty) or on oracle labels does not, after the
argmax, realise exactly that fraction. Calibration adds one offset per constrained choice to the logits and
sets it by bisection on a calibration split, so that the realised fraction of that choice over all tokens
and layers matches the target (docs/design.md §2; docs/results.md, "Budgets and calibration", measures it against ±2 points on held-out data). The offsets
are global, so the router keeps its own preferences between layers and tokens. With two constrained choices
(three-way budgets) the bisections alternate for a few rounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.model.transformer import DuoLM
from duollm.routers.linear import LinearRouter, constrained, realised
from duollm.routing.route import Choice


@torch.no_grad()
def realised_on(model: DuoLM, router: LinearRouter, windows: Tensor, batch_size: int = 16) -> dict[str, float]:
    """Fractions of each choice the router realises in hard mode over windows (N, T)."""
    router.soft = False
    dev = next(model.parameters()).device
    routes = [model(windows[i : i + batch_size].to(dev), router=router).route.cpu() for i in range(0, len(windows), batch_size)]
    return realised(torch.cat(routes))


@torch.no_grad()
def calibrate(
    model: DuoLM, router: LinearRouter, windows: Tensor, target: dict[int, float], iters: int = 20, rounds: int = 3
) -> dict[str, float]:
    """Set `router.offset` so that each constrained choice's realised fraction meets `target`; returns the fractions.

    The bisection ends on whichever end of its last bracket realises the fraction nearer the target: where scores
    tie (a layer of constant scores) the fraction jumps, and the midpoint could land on the far side of the jump."""
    cons = constrained(router.options)
    for _ in range(rounds if len(cons) > 1 else 1):
        for c in cons:
            k, name = router.options.index(c), Choice(c).name.lower()
            lo, hi = -40.0, 40.0  # logit units; the fraction of c grows with its offset
            frac = {lo: 0.0, hi: 1.0}  # realised fraction at each end (assumed at ±40 until measured)
            for _ in range(iters):
                mid = (lo + hi) / 2
                router.offset[k] = mid
                frac[mid] = realised_on(model, router, windows)[name]
                lo, hi = (mid, hi) if frac[mid] < target[c] else (lo, mid)
            router.offset[k] = min((lo, hi), key=lambda o: abs(frac[o] - target[c]))
    return realised_on(model, router, windows)

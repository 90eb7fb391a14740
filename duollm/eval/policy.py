"""Policies: anything that produces routes for a batch (docs/design.md §1).

Spelled on the command line as `all-big`, `all-small`, `random:P` (each (token, layer) BIG with probability
P, else SMALL; `random:B,S,K` gives the big, small and skip probabilities), or a route string with one letter
per layer (`B` big, `S` small, `-` skip), or `router:NAME`, a router trained on the run (`duollm router train`;
loaded by `duollm eval`, which knows the run).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from duollm.routers.storage import load_named
from duollm.routing.budget import parse_mix
from duollm.routing.route import Choice, parse_route
from duollm.routing.sample import RandomRouter, random_route


@dataclass(frozen=True)
class Policy:
    """A named route source: a static route (L,), or random per-token choices with probabilities p."""

    name: str
    route: Tensor | None = None  # (L,) uint8 for static policies
    p: tuple[float, float, float] | None = None  # (big, small, skip) for random policies
    router: object | None = None  # a router, router(layer, u) → choices: decides inside the forward

    def decode_args(self, gen: torch.Generator) -> dict:
        """How decoding (`model.generate`) takes the policy: {"router": ...} or {"route": (L,)}; random draws
        come from `gen` through a `RandomRouter`."""
        if self.router is not None:
            return {"router": self.router}
        if self.route is not None:
            return {"route": self.route}

        return {"router": RandomRouter(self.p, gen)}

    def routes(self, B: int, T: int, n_layer: int, gen: torch.Generator) -> Tensor:
        """The route for a (B, T) batch: (L,) when static, (B, T, L) when random."""
        if self.route is not None:
            return self.route
        big, small, skip = self.p
        return random_route((B, T, n_layer), big, small, skip, gen)


def parse_policy(text: str, n_layer: int) -> Policy:
    """Parse a policy string; raises ValueError naming the problem."""
    if text == "all-big":
        return Policy(text, route=torch.full((n_layer,), Choice.BIG, dtype=torch.uint8))
    if text == "all-small":
        return Policy(text, route=torch.full((n_layer,), Choice.SMALL, dtype=torch.uint8))
    if text.startswith("random:"):
        mix = text[len("random:") :]
        try:
            p = parse_mix(mix, "big,small,skip" if "," in mix else "big,small")
        except ValueError as e:
            raise ValueError(f"bad policy {text!r}: random:P or random:BIG,SMALL,SKIP takes probabilities; {e}") from None
        return Policy(text, p=(p[Choice.BIG], p[Choice.SMALL], p.get(Choice.SKIP, 0.0)))
    if text.startswith("router:"):
        raise ValueError(f"policy {text!r} names a router of a run: use it with `duollm eval --run RUN --policy {text}`")
    if set(text) <= set("BS-"):
        return Policy(text, route=parse_route(text, n_layer))
    raise ValueError(f"unknown policy {text!r}: use all-big, all-small, random:P, or a route string of B/S/- ({n_layer} letters)")


def run_policy(run, text: str, model, device: str) -> Policy:
    """A policy string of `duollm eval`, including `router:NAME` (a router trained on the run `run`)."""
    if text.startswith("router:"):
        return Policy(text, router=load_named(run, text[len("router:") :], device, model)[0])
    return parse_policy(text, model.cfg.n_layer)

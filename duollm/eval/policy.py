"""Policies: anything that produces routes for a batch (docs/design.md §1).

Spelled on the command line as `all-big`, `all-small`, `random:P` (each (token, layer) BIG with probability
P, else SMALL; `random:B,S,K` gives the big, small and skip probabilities), or a route string with one letter
per layer (`B` big, `S` small, `-` skip), or `router:NAME`, a router trained on the run (`duollm router train`;
loaded by `duollm eval`, which knows the run), or one of the training-free routers (routers/training_free.py,
docs/policies.md), a threshold in (0, 1] and optional `key=value` settings:
`skipllm:T[,first=2,last=2,warmup=8,window=2]` (FFN-SkipLLM) and `exit:T[,to=skip|small,every=1,from=0]`
(confidence early exit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from duollm.routers.storage import load_named
from duollm.routers.training_free import EarlyExit, FFNSkip
from duollm.routing.budget import parse_mix
from duollm.routing.cost import CostTable, head_check_cost, route_cost
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

    def flops(self, route: Tensor, table: CostTable) -> Tensor:
        """Forward FLOPs of each token that took `route` ((L,) → scalar, (B, T, L) → (B, T)), float64: its FFN
        choices and attention and the head (`route_cost`), plus the extra head evaluations of a router that
        counts them (`head_checks`, the early exit's)."""
        flops = route_cost(route, table)
        checks = getattr(self.router, "head_checks", None)
        return flops if checks is None else flops + head_check_cost(checks(route), table)


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
    if text.startswith(("skipllm:", "exit:")):
        return Policy(text, router=training_free(text, n_layer))
    if text.startswith("router:"):
        raise ValueError(f"policy {text!r} names a router of a run: use it with `duollm eval --run RUN --policy {text}`")
    if set(text) <= set("BS-"):
        return Policy(text, route=parse_route(text, n_layer))
    raise ValueError(
        f"unknown policy {text!r}: use all-big, all-small, random:P, skipllm:T, exit:T, or a route string of B/S/- ({n_layer} letters)"
    )


USAGE = {
    "skipllm": "skipllm:T[,first=2,last=2,warmup=8,window=2] with T in (0, 1]",
    "exit": "exit:T[,to=skip|small,every=1,from=0] with T in (0, 1]",
}
COUNTS = {"skipllm": {"first": 0, "last": 0, "warmup": 0, "window": 1}, "exit": {"every": 1, "from": 0}}  # name → least value
TARGETS = {"skip": Choice.SKIP, "small": Choice.SMALL}  # where the early exit sends later FFNs


def training_free(text: str, n_layer: int) -> FFNSkip | EarlyExit:
    """The router of `skipllm:...` or `exit:...` (routers/training_free.py); ValueError naming the problem."""
    method, threshold, given = settings(text)
    if method == "skipllm":
        router = FFNSkip(threshold, **given)
        if router.first + router.last >= n_layer or router.window >= n_layer - router.last:
            raise bad(text, f"no layer of {n_layer} can skip with first={router.first}, last={router.last}, window={router.window}")
        return router
    router = EarlyExit(threshold, TARGETS[given.pop("to", "skip")], first=given.pop("from", 0), **given)
    if not router.checked(n_layer):
        raise bad(text, f"from={router.first} leaves no layer to check before the last of {n_layer}")
    return router


def settings(text: str) -> tuple[str, float, dict[str, int | str]]:
    """`METHOD:T,key=value,...` → (METHOD, T, {key: value}), each value checked; ValueError naming the problem."""
    method, _, rest = text.partition(":")
    first, *items = rest.split(",")
    try:
        threshold = float(first)
    except ValueError:
        raise bad(text, f"threshold {first!r} is not a number") from None
    if not 0 < threshold <= 1:  # also refuses nan
        raise bad(text, f"threshold {first} is outside (0, 1]")
    given: dict[str, int | str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key in given:
            raise bad(text, f"{item!r} is not a new key=value setting")
        if key == "to" and method == "exit":
            if value not in TARGETS:
                raise bad(text, f"to={value} is neither skip nor small")
            given[key] = value
        elif key in COUNTS[method]:
            if not (value.isascii() and value.isdigit()) or int(value) < COUNTS[method][key]:
                raise bad(text, f"{key}={value} is not a whole number >= {COUNTS[method][key]}")
            given[key] = int(value)
        else:
            raise bad(text, f"unknown setting {key!r}")
    return method, threshold, given


def bad(text: str, problem: str) -> ValueError:
    """The one-line error of a bad training-free policy string, with how to write it."""
    return ValueError(f"bad policy {text!r}: {problem}; use {USAGE[text.partition(':')[0]]}")


def run_policy(run, text: str, model, device: str) -> Policy:
    """A policy string of `duollm eval`, including `router:NAME` (a router trained on the run `run`)."""
    if text.startswith("router:"):
        return Policy(text, router=load_named(run, text[len("router:") :], device, model)[0])
    return parse_policy(text, model.cfg.n_layer)

"""Choices and routes (docs/design.md §1, §7.8).

A *choice* is what one token does at one layer: SKIP (the FFN adds nothing), SMALL or BIG. A *route* is a
`uint8` tensor of choices with layers on the last axis: `(L,)` is one route for every token, `(B, T, L)`
is one route per token. Routes become strings only for people (`format_route`, `parse_route`):
`B` = big, `S` = small, `-` = skip, one letter per layer, first layer first.
"""

from __future__ import annotations

from enum import IntEnum

import torch
from torch import Tensor


class Choice(IntEnum):
    """What one token does at one layer. The values are the ones stored in route tensors."""

    SKIP = 0
    SMALL = 1
    BIG = 2


N_CHOICES = len(Choice)
_LETTER = {Choice.SKIP: "-", Choice.SMALL: "S", Choice.BIG: "B"}
_FROM_LETTER = {v: k for k, v in _LETTER.items()}


def check_route(route: Tensor, n_layer: int, batch_shape: tuple[int, int] | None = None) -> Tensor:
    """Validate a route at a public boundary and return it unchanged.

    `route` must be `uint8`, shaped `(L,)` or `(B, T, L)` with `L == n_layer` (and `(B, T) == batch_shape`
    when given), and hold only values of `Choice`. Anything else raises `ValueError` naming the problem.
    Inside a step being compiled the values are not read (a read would break the graph, and a compiled training
    step checks its routes where it draws them); the dtype and shape checks still run.
    """
    if not isinstance(route, Tensor):
        raise ValueError(f"route must be a torch.Tensor of dtype uint8, got {type(route).__name__}")
    if route.dtype != torch.uint8:
        raise ValueError(f"route must have dtype torch.uint8, got {route.dtype}")
    if route.dim() not in (1, 3):
        raise ValueError(f"route must be shaped (L,) or (B, T, L), got {tuple(route.shape)}")
    if route.shape[-1] != n_layer:
        raise ValueError(f"route has {route.shape[-1]} layers on its last axis, the model has {n_layer}")
    if route.dim() == 3 and batch_shape is not None and tuple(route.shape[:2]) != tuple(batch_shape):
        raise ValueError(f"route is shaped {tuple(route.shape)} but the input is {tuple(batch_shape)}")
    if route.numel() and not torch.compiler.is_compiling() and int(route.max()) >= N_CHOICES:
        raise ValueError(f"route holds the value {int(route.max())}; choices are 0 (skip), 1 (small), 2 (big)")
    return route


def parse_route(text: str, n_layer: int | None = None) -> Tensor:
    """`"BBS-"` → `tensor([2, 2, 1, 0], dtype=uint8)`; raises `ValueError` on an unknown letter or length."""
    bad = sorted(set(text) - set(_FROM_LETTER))
    if not text or bad:
        raise ValueError(f"bad route string {text!r}: use one of B (big), S (small), - (skip) per layer")
    if n_layer is not None and len(text) != n_layer:
        raise ValueError(f"route string {text!r} has {len(text)} layers, the model has {n_layer}")
    return torch.tensor([_FROM_LETTER[c] for c in text], dtype=torch.uint8)  # (L,)


def format_route(route: Tensor) -> str:
    """`tensor([2, 2, 1, 0])` → `"BBS-"` (one static route, shape `(L,)`)."""
    if route.dim() != 1:
        raise ValueError(f"format_route takes one route shaped (L,), got {tuple(route.shape)}")
    return "".join(_LETTER[Choice(int(c))] for c in route.tolist())


def host_counts(route: Tensor) -> Tensor:
    """(L, 3) int64: the tokens of a per-token route (B, T, L) that take BIG, SMALL and SKIP at each layer."""
    return torch.stack([(route == c).sum((0, 1)) for c in (Choice.BIG, Choice.SMALL, Choice.SKIP)], dim=1)


def checked_counts(counts, route: Tensor, L: int, N: int, traced: bool = False) -> list[tuple[int, int, int]]:
    """`counts` handed to `DuoLM.forward` as a list of L (BIG, SMALL, SKIP) tuples of N tokens each, or ValueError;
    unless `traced` (inside a compilation), a route on the host is counted too, and they must agree."""
    triples = [tuple(c) for c in counts if isinstance(c, tuple | list) and len(c) == 3]
    if route.dim() != 3 or len(triples) != len(counts) or len(triples) != L:
        triples = []
    if not triples or any(not isinstance(n, int) or n < 0 for c in triples for n in c) or any(sum(c) != N for c in triples):
        raise ValueError(f"counts go with a per-token route: {L} (BIG, SMALL, SKIP) triples of {N} tokens each")
    if route.device.type == "cpu" and not traced and triples != [tuple(c) for c in host_counts(route).tolist()]:
        raise ValueError("counts differ from the route's own counts (host_counts(route))")
    return triples

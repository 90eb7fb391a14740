"""Decoding: many sequences at once with a KV cache, each new token routed by a policy (DESIGN.md §2).

Attention runs for every token at every layer, so the cache (`KVCache`) is complete whatever the routes; only
the FFN of each new token is routed. A policy is a static route `(L,)`, or a router `router(layer, u) →
choices` that decides from each new token's state (a trained router, or `RandomRouter`). The prompt is run
once (prefill), then one token per step for all sequences together; greedy (temperature 0) or sampling with
temperature and top-k from an explicit generator. Returns the tokens and the route every token took.

This is the readable reference; the fast decode path (CUDA graphs per batch bucket, issue 5) must match it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from duollm.model.transformer import DuoLM, KVCache
from duollm.routing.route import Choice


@dataclass
class Generation:
    """Prompt plus generated tokens, and the route each token took."""

    ids: Tensor  # (B, T0 + n) int64
    route: Tensor  # (B, T0 + n - 1, L) uint8: routes of every token that was run (the last one never is)


class RandomRouter:
    """Each (token, layer) draws BIG, SMALL or SKIP with probabilities p from `gen`: `random:P` as a router."""

    def __init__(self, p: tuple[float, float, float], gen: torch.Generator):
        self.p = torch.tensor([p[2], p[1], p[0]], dtype=torch.float64)  # indexed by Choice: SKIP, SMALL, BIG
        self.gen = gen

    def __call__(self, layer: int, u: Tensor) -> Tensor:
        draw = torch.multinomial(self.p, u.shape[0] * u.shape[1], replacement=True, generator=self.gen)
        return draw.view(u.shape[:2]).to(torch.uint8).to(u.device)  # (B, T)


def sample(logits: Tensor, temperature: float, top_k: int, gen: torch.Generator | None) -> Tensor:
    """Next tokens (B,) from last-position logits (B, V): argmax at temperature 0, else top-k sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=gen).squeeze(1).to(logits.device)


@torch.no_grad()
def generate(
    model: DuoLM,
    ids: Tensor,
    max_new_tokens: int,
    route: Tensor | None = None,
    router=None,
    temperature: float = 0.0,
    top_k: int = 0,
    gen: torch.Generator | None = None,
) -> Generation:
    """Continue every prompt of `ids` (B, T0) by `max_new_tokens` tokens; `route` (L,) or `router` picks routes."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model.eval()
    B, T0 = ids.shape
    L = model.cfg.n_layer
    if route is None and router is None:
        route = torch.full((L,), Choice.BIG, dtype=torch.uint8)
    p = next(model.parameters())
    cache = KVCache.empty(model.cfg, B, T0 + max_new_tokens - 1, device=ids.device, dtype=p.dtype)
    out = model(ids, route=route, router=router, cache=cache)  # prefill

    def per_token(r: Tensor, T: int) -> Tensor:  # a static route comes back (L,) on the host
        return r.to(ids.device).expand(B, T, L)

    routes = [per_token(out.route, T0)]
    for step in range(max_new_tokens):
        nxt = sample(out.logits[:, -1], temperature, top_k, gen)  # (B,)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if step == max_new_tokens - 1:
            break
        out = model(nxt[:, None], route=route, router=router, cache=cache)  # one token per sequence
        routes.append(per_token(out.route, 1))
    return Generation(ids, torch.cat(routes, dim=1))

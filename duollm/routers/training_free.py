"""Two training-free routers that run on any Duo model: FFN-SkipLLM and confidence early exit (docs/policies.md).

Neither learns anything; each decides from states the forward computes, through the router interface of
`DuoLM._forward_routed` (model/transformer.py): `start(model, positions)` before the first layer resets the
per-token state, `__call__(layer, u)` gives the layer's choices (B, T) uint8, `observe(layer, x, y)` after the
layer's FFN sees the residual stream before (x) and after (y) it. A token's state is its own, and its states
depend on tokens <= t only, so both are causal and decide the same token by token with a KV cache as in one
forward; the state lives for one forward (in decoding, across the layers of one step).

- `FFNSkip` (Jaiswal et al. 2024, "FFN-SkipLLM: A Hidden Gem for Autoregressive Decoding with Adaptive
  Feed-Forward Skipping", arXiv:2404.03865): a token skips its FFNs once they have saturated, that is once the
  cosine similarity between the residual stream before and after the FFN, cos(x, x + FFN(u)), was at least the
  threshold at each of the last `window` layers whose FFN ran. From then on it skips every FFN up to the
  protected last layers (a skipped FFN changes nothing, so saturation holds: the paper's greedy skipping of the
  following FFN blocks). The first `first` and last `last` layers always run BIG, and so do the first `warmup`
  positions of a sequence (the paper's warm-up tokens, which keep the attention sinks whole).
- `EarlyExit`: after each checked layer the residual stream goes through the final norm and the output head;
  once the largest next-token probability reaches the threshold, every later FFN of the token goes to `to`
  (SKIP or SMALL). Attention still runs at every layer, so the KV cache stays whole. The head is expensive, so
  it is checked after layers `first, first + every, ...` only (never after the last layer, where nothing is left
  to skip), and `head_checks` counts the evaluations each token needed (routing/cost.py `head_check_cost`).

Before it exits or saturates, a token's FFNs run BIG: the methods are written for the dense model the Duo
model's all-BIG route is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from duollm.routing.route import Choice


def _choices(mask: Tensor, when: int, otherwise: int = Choice.BIG) -> Tensor:
    """(B, T) bool → (B, T) uint8: `when` where mask, else `otherwise`."""
    return torch.where(mask, when, otherwise).to(torch.uint8)


class FFNSkip:
    """FFN-SkipLLM as a router: SKIP once cos(x, x + FFN(u)) >= `threshold` at `window` layers in a row.

    Defaults: the first 2 and last 2 layers and the first 8 positions never skip; saturation needs 2 layers.
    A threshold above 1 never fires (the policy is then all-BIG, exactly)."""

    def __init__(self, threshold: float, first: int = 2, last: int = 2, warmup: int = 8, window: int = 2):
        self.threshold, self.first, self.last, self.warmup, self.window = threshold, first, last, warmup, window
        self.n_layer = 0
        self.warm = self.streak = self.skipped = None  # (B, T) each, set by `start`

    def start(self, model, positions: Tensor) -> None:
        """A new forward of tokens at `positions` (B, T): no FFN saturated yet."""
        self.n_layer = model.cfg.n_layer
        self.warm = positions < self.warmup  # (B, T) bool: warm-up tokens never skip
        self.streak = torch.zeros(positions.shape, dtype=torch.long, device=positions.device)  # (B, T) saturated layers in a row
        self.skipped = torch.zeros(positions.shape, dtype=torch.bool, device=positions.device)  # (B, T) at the last layer

    def protected(self, layer: int) -> bool:
        return layer < self.first or layer >= self.n_layer - self.last

    def __call__(self, layer: int, u: Tensor) -> Tensor:
        """(B, T) uint8: SKIP where the token's FFNs have saturated, else BIG."""
        skip = (self.streak >= self.window) & ~self.warm  # (B, T)
        if self.protected(layer):
            skip = torch.zeros_like(skip)
        self.skipped = skip
        return _choices(skip, Choice.SKIP)

    def observe(self, layer: int, x: Tensor, y: Tensor) -> None:
        """Count a saturated layer where the FFN ran and cos(x, y) >= threshold; a skipped FFN leaves the count."""
        cos = F.cosine_similarity(x.float(), y.float(), dim=-1)  # (B, T)
        ran = torch.where(cos >= self.threshold, self.streak + 1, 0)  # (B, T)
        self.streak = torch.where(self.skipped, self.streak, ran)


class EarlyExit:
    """Confidence early exit as a router: after checked layers, max softmax(head(x)) >= `threshold` sends every
    later FFN of the token to `to`.

    Defaults: the head is checked after every layer but the last (`every=1`, from layer `first=0`), later FFNs
    are skipped. A threshold above 1 never fires (the route is then all-BIG, the checks still counted)."""

    def __init__(self, threshold: float, to: int = Choice.SKIP, every: int = 1, first: int = 0):
        self.threshold, self.to, self.every, self.first = threshold, int(to), every, first
        self.head, self.at = None, frozenset()
        self.exited = None  # (B, T) bool, set by `start`

    def checked(self, n_layer: int) -> list[int]:
        """The layers after which the head is checked: first, first + every, ... below the last layer."""
        return list(range(self.first, n_layer - 1, self.every))

    def start(self, model, positions: Tensor) -> None:
        """A new forward: no token has exited; the head is the model's (final norm and output projection)."""
        self.head, self.at = model.head, frozenset(self.checked(model.cfg.n_layer))
        self.exited = torch.zeros(positions.shape, dtype=torch.bool, device=positions.device)  # (B, T)

    def __call__(self, layer: int, u: Tensor) -> Tensor:
        """(B, T) uint8: `to` where the token has exited, else BIG."""
        return _choices(self.exited, self.to)

    def observe(self, layer: int, x: Tensor, y: Tensor) -> None:
        """After a checked layer: tokens whose prediction from y (B, T, C) is confident enough exit."""
        if layer in self.at:
            confidence = self.head(y).float().softmax(-1).amax(-1)  # (B, T)
            self.exited = self.exited | (confidence >= self.threshold)

    def head_checks(self, route: Tensor) -> Tensor:
        """Head evaluations each token of `route` (..., L) needed under this policy: (...) int64.

        A token runs BIG up to the layer it exits after (its last BIG layer; the last layer when it never
        exits) and is checked at every checked layer up to there, none after. A batched forward evaluates the
        head for every token at every checked layer; this counts what a token-by-token decoder spends."""
        L = route.shape[-1]
        layer = torch.arange(L, device=route.device)  # (L,)
        last_big = torch.where(route == Choice.BIG, layer, -1).amax(-1)  # (...)
        checked = torch.tensor(self.checked(L), dtype=torch.long, device=route.device)  # (K,)
        return (checked <= last_big.unsqueeze(-1)).sum(-1)  # (...)

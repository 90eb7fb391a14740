"""LayerSkip-style early exit: the `layerskip` entrant (Elhoushi et al. 2024, "LayerSkip: Enabling Early Exit Inference
and Self-Speculative Decoding", arXiv:2404.16710).

A dense BIG decoder with early exit and KV completion (methods/exits.py: an exited token's state is frozen, and every
later layer computes its keys and values from it), trained so that its early layers can predict.

**Training** (`model.train()`, the whole model, no exits):
- *Layer dropout rising with depth*, **per sequence**: sequence b skips layer l whole (its residual stream passes
  unchanged) with p_l = p_max·l/(L-1), so the first layer is never dropped and the last with `p_max` (default 0.1).
  Kept layers are not rescaled. Drawn from torch's global generator, like dropout's.
- *Early-exit loss* through the shared final norm and head, **at every layer, every step** (not LayerSkip's
  rotational curriculum): `aux = exit_weight · Σ_{l<L-1} e_l·loss_l`, loss_l the next-token loss of the state after
  layer l, e_l = (l+1) / Σ_{j<L-1} (j+1), rising with depth and summing to 1, so the early exits together weigh
  `exit_weight` (default 1) against the last layer. `out.loss` stays the last layer's next-token loss.

**Inference** (`eval()`): a confidence exit. After the checked layers, `min_layer`, `min_layer + check_every`, ...
below the last, the head reads the token's state (final norm and output head, softmax over the vocabulary); a
largest probability >= `threshold` exits the token there, and those logits are its output. `threshold = 1` checks
nothing and never exits: the model is then the dense model with the same weights, FLOPs and logits alike.
`threshold`, `budget`, `min_layer` and `check_every` change evaluation only (`eval_options`): the arena trains once
and evaluates each, and `calibrate` (methods/exits.py, with a `budget`) sets the threshold on training windows.

**FLOPs per token**: methods/exits.py's trunk (the dense layers a token ran, keys and values only after its exit)
plus the head 2·d·V at every check it took: a token exiting at a check takes that check's logits as its output (no
further head); a token that reaches the last layer took every check and then the head once more.
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.errors import DuoError
from duollm.methods.base import MethodOutput
from duollm.methods.exits import ExitLM, Stop, layer_flops, next_token_loss
from duollm.model.transformer import DuoConfig


class LayerSkip(ExitLM):
    """A dense BIG decoder trained with layer dropout and an early-exit loss, exiting on the head's confidence.

    Options: `threshold` the confidence that exits (1: never), `min_layer` the first layer checked after,
    `check_every` the checks' spacing, `p_max` the last layer's dropout rate, `exit_weight` the early-exit losses'
    weight, `budget` the FFN share `calibrate` meets (0: none)."""

    method = "layerskip"
    eval_options = ("threshold", "budget", "min_layer", "check_every")  # training checks every layer whatever these say

    def __init__(
        self,
        cfg: DuoConfig,
        threshold: float = 0.9,
        min_layer: int = 0,
        check_every: int = 1,
        p_max: float = 0.1,
        exit_weight: float = 1.0,
        budget: float = 0.0,
    ):
        super().__init__(cfg, threshold, budget, min_layer=min_layer, check_every=check_every, p_max=p_max, exit_weight=exit_weight)
        L = cfg.n_layer
        if not isinstance(min_layer, int) or not 0 <= min_layer <= L - 2:
            raise DuoError(f"layerskip: min_layer must be an integer in 0..n_layer-2 ({L - 2}), got {min_layer!r}")
        if not isinstance(check_every, int) or check_every < 1:
            raise DuoError(f"layerskip: check_every must be a positive integer, got {check_every!r}")
        if not isinstance(p_max, int | float) or not 0 <= p_max <= 1:
            raise DuoError(f"layerskip: p_max is a dropout rate in [0, 1], got {p_max!r}")
        if not isinstance(exit_weight, int | float) or not exit_weight >= 0:
            raise DuoError(f"layerskip: exit_weight must be >= 0, got {exit_weight!r}")
        self.min_layer, self.check_every, self.p_max, self.exit_weight = min_layer, check_every, float(p_max), float(exit_weight)
        self.register_buffer("drop_rate", self.p_max * torch.arange(L) / (L - 1), persistent=False)  # (L,) p_l
        scale = torch.arange(1, L, dtype=torch.float32)  # (L-1,) l + 1
        self.register_buffer("exit_scale", scale / scale.sum(), persistent=False)  # (L-1,) e_l
        self.reset_parameters()

    def checked(self) -> tuple[int, ...]:
        """The layers after which the head is checked: min_layer, min_layer + check_every, ... below the last; none
        when `threshold` is 1."""
        return () if self.threshold >= 1 else tuple(range(self.min_layer, self.cfg.n_layer - 1, self.check_every))

    def exit_rule(self) -> tuple[tuple[int, ...], Stop]:
        """Exit where the head's largest next-token probability reaches `threshold`."""
        return self.checked(), lambda l, x: self.head(x).float().softmax(-1).amax(-1) >= self.threshold

    def head_flops(self, exit: Tensor) -> Tensor:
        """The head's 2·d·V at every check up to the exit, and once more for a token that reached the last layer."""
        checked = torch.tensor(self.checked(), dtype=torch.long, device=exit.device)  # (K,)
        heads = (checked <= exit[..., None]).sum(-1) + (exit == self.cfg.n_layer - 1)  # (B, T)
        return heads.double() * (2 * self.cfg.d_model * self.cfg.vocab_size)

    def fit(self, ids: Tensor, targets: Tensor | None) -> MethodOutput:
        """Layer dropout per sequence; `out.loss` the last layer's next-token loss, `out.aux` the early-exit loss."""
        B, T = ids.shape
        L = self.cfg.n_layer
        dropped = torch.rand(B, L, device=ids.device) < self.drop_rate  # (B, L)
        states, _ = self.trunk(ids, dropped=dropped)
        logits = self.head(states[-1])  # (B, T, V)
        loss, aux, stats = None, torch.zeros((), device=ids.device), {"dropped": dropped.float().mean()}
        if targets is not None:
            loss = next_token_loss(logits, targets)
            exits = torch.stack([next_token_loss(self.head(x), targets) for x in states[:-1]])  # (L-1,)
            aux = self.exit_weight * (self.exit_scale * exits).sum()  # weighted by depth
            stats["exit_loss"] = exits.detach().mean()
        ran = ~dropped[:, None, :].expand(B, T, L)  # (B, T, L): a dropped layer computes nothing
        flops = layer_flops(self.cfg, ran, torch.zeros_like(ran)) + L * 2 * self.cfg.d_model * self.cfg.vocab_size  # every head
        stats = dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))  # one host sync
        return MethodOutput(logits=logits, loss=loss, aux=aux, flops=flops, stats=stats)

"""Learned halting: the `halting` entrant (PonderNet: Banino et al. 2021, "PonderNet: Learning to Ponder",
arXiv:2107.05407; PALBERT: Balagansky & Gavrilov 2022, "PALBERT: Teaching ALBERT to Ponder", arXiv:2204.03276).

A dense BIG decoder with early exit and KV completion (methods/exits.py: an exited token's state is frozen, and every
later layer computes its keys and values from it). After each layer l < L-1 a halting head, a linear map d → 1 with a
bias over the token's normalised state (the shared final norm's output, what the output head reads), gives
λ_l = sigmoid(z_l). The halting distribution over the layers is

    p_l = λ_l · Π_{j<l} (1 − λ_j)   (l < L-1),      p_{L-1} = Π_{j<L-1} (1 − λ_j)   (the last layer takes the rest)

**Training** (`model.train()`, every layer for every token, PonderNet's loss):
- `out.loss` = the expected next-token loss over halting steps, Σ_l p_l · loss_l per token (loss_l the next-token
  loss of the state after layer l through the shared final norm and head), averaged over the tokens with a target;
- `out.aux` = β · KL(p ‖ the geometric prior of rate λ_p truncated at L layers the same way: g_l = λ_p (1 − λ_p)^l,
  the last layer the rest), averaged over every token; options `beta` (default 0.01) and `prior` λ_p (default 0.1).
  So the arena's `loss + aux` is PonderNet's objective. `out.logits` are the last layer's; `stats` holds its loss
  (`loss_last`), the KL and the expected depth (`depth`: Σ_l p_l (l + 1) / L).
The halting heads start with bias 0, λ = 1/2.

**Inference** (`eval()`): PALBERT's deterministic rule: a token exits after the first layer where its cumulative
halting probability Σ_{j<=l} p_j = 1 − Π_{j<=l} (1 − λ_j) reaches `threshold` (default 0.5), and the output head
runs once, on the state there. `threshold = 1` runs no halting head and never exits: the model is then the dense
model with the same weights, FLOPs and logits alike (a cumulative probability below 1 can round to 1 in floats, so
1 is this rule, not the comparison). `threshold` and `budget` change evaluation only (`eval_options`): the arena
trains once and evaluates each, and `calibrate` (methods/exits.py, with a `budget`) sets the threshold on training
windows.

**FLOPs per token**: methods/exits.py's trunk (the dense layers a token ran, keys and values only after its exit),
the halting head 2·d after every layer it ran but the last (the last layer's halting takes no head), and the output
head 2·d·V once. In training every layer, every halting head, and the output head at every layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from duollm.errors import DuoError
from duollm.methods.base import MethodOutput
from duollm.methods.exits import ExitLM, Stop, layer_flops, next_token_loss
from duollm.model.transformer import DuoConfig


def halting_log_probs(z: Tensor) -> Tensor:
    """log p_l of the halting distribution from halting logits z (..., L-1) → (..., L): log λ_l + Σ_{j<l} log(1 − λ_j),
    the last layer's λ taken as 1 (it takes the rest). Through logsigmoid, so no probability underflows to log 0."""
    stay = F.pad(F.logsigmoid(-z).cumsum(-1), (1, 0))  # (..., L): log Π_{j<l} (1 − λ_j), 0 at l = 0
    halt = F.pad(F.logsigmoid(z), (0, 1))  # (..., L): log λ_l, 0 at the last layer
    return stay + halt


class Halting(ExitLM):
    """A dense BIG decoder with a halting head after every layer but the last, trained with PonderNet's loss and
    exiting on PALBERT's cumulative rule.

    Options: `threshold` the cumulative halting probability that exits (1: never), `beta` the KL term's weight,
    `prior` the geometric prior's rate λ_p, `budget` the FFN share `calibrate` meets (0: none)."""

    method = "halting"

    def __init__(self, cfg: DuoConfig, threshold: float = 0.5, beta: float = 0.01, prior: float = 0.1, budget: float = 0.0):
        super().__init__(cfg, threshold, budget, beta=beta, prior=prior)
        if not isinstance(beta, int | float) or not beta >= 0:
            raise DuoError(f"halting: beta must be >= 0, got {beta!r}")
        if not isinstance(prior, int | float) or not 0 < prior < 1:
            raise DuoError(f"halting: prior is the geometric prior's rate in (0, 1), got {prior!r}")
        self.beta, self.prior = float(beta), float(prior)
        L = cfg.n_layer
        self.halt = nn.ModuleList(nn.Linear(cfg.d_model, 1) for _ in range(L - 1))  # after layers 0..L-2
        logit = torch.full((L - 1,), math.log(self.prior / (1 - self.prior)))  # (L-1,) λ_p at every layer
        self.register_buffer("log_prior", halting_log_probs(logit), persistent=False)  # (L,) log g_l
        self.reset_parameters()

    def halting(self, l: int, x: Tensor) -> Tensor:
        """Halting logits z_l (B, T) fp32 of the state x (B, T, C) after layer l."""
        return self.halt[l](self.norm(x)).squeeze(-1).float()

    def exit_rule(self) -> tuple[tuple[int, ...], Stop]:
        """Exit where 1 − Π_{j<=l} (1 − λ_j) reaches `threshold`; no layer at all when it is 1."""
        rest = None  # (B, T): the mass not yet halted, Π_{j<=l} (1 − λ_j), carried from layer to layer in one forward

        def stop(l: int, x: Tensor) -> Tensor:
            nonlocal rest
            stay = torch.sigmoid(-self.halting(l, x))  # (B, T) 1 − λ_l
            rest = stay if rest is None else rest * stay
            return 1 - rest >= self.threshold

        return () if self.threshold >= 1 else tuple(range(self.cfg.n_layer - 1)), stop

    def head_flops(self, exit: Tensor) -> Tensor:
        """The halting head's 2·d after every layer run but the last (none when `threshold` is 1), the head once."""
        c = self.cfg
        halts = torch.zeros_like(exit) if self.threshold >= 1 else exit.clamp(max=c.n_layer - 2) + 1  # (B, T)
        return halts.double() * (2 * c.d_model) + 2 * c.d_model * c.vocab_size

    def fit(self, ids: Tensor, targets: Tensor | None) -> MethodOutput:
        """Every layer for every token; `out.loss` the expected next-token loss, `out.aux` β · KL(p ‖ prior)."""
        B, T = ids.shape
        L = self.cfg.n_layer
        states, _ = self.trunk(ids)
        z = torch.stack([self.halting(l, x) for l, x in enumerate(states[:-1])], -1)  # (B, T, L-1)
        log_p = halting_log_probs(z)  # (B, T, L)
        p = log_p.exp()  # (B, T, L)
        kl = (p * (log_p - self.log_prior)).sum(-1).mean()
        logits = self.head(states[-1])  # (B, T, V): the last layer's
        depth = (p * torch.arange(1, L + 1, device=p.device)).sum(-1).mean() / L
        loss, stats = None, {"kl": kl.detach(), "depth": depth.detach()}
        if targets is not None:
            heads = [*map(self.head, states[:-1]), logits]  # L × (B, T, V): every layer's prediction
            ce = torch.stack([next_token_loss(h, targets, "none") for h in heads], -1)  # (B, T, L)
            has = (targets != -1).float()  # (B, T)
            loss = ((p * ce).sum(-1) * has).sum() / has.sum().clamp(min=1)
            stats["loss_last"] = (ce[..., -1] * has).sum().detach() / has.sum().clamp(min=1)
        ran = torch.ones(B, T, L, dtype=torch.bool, device=ids.device)  # (B, T, L)
        c = self.cfg
        flops = layer_flops(c, ran, ~ran) + (L - 1) * 2 * c.d_model + L * 2 * c.d_model * c.vocab_size  # every head
        stats = dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))  # one host sync
        return MethodOutput(logits=logits, loss=loss, aux=self.beta * kl, flops=flops, stats=stats)

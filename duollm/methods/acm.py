"""Adaptive Computation Modules on the Duo backbone: the `acm` entrant (Wójcik et al. 2023, "Adaptive Computation
Modules: Granular Conditional Computation for Efficient Inference", arXiv:2312.10193).

Each layer's FFN of width `d_big` is cut into N nested *learners*, each a SwiGLU of width `d_big / N`. Running n of
them means the sum of the first n learners' outputs: n = N is the whole FFN (one SwiGLU of width `d_big` whose
weights are the learners' concatenated), n = 0 adds nothing (SKIP). A per-token gate, one linear layer with a bias
over the pre-FFN normalised state (d → N + 1 logits), picks n. Attention runs for every token at every layer, as
in the Duo model (docs/design.md §2), so the KV cache is model/transformer.py's own and never has holes.

Training, end to end from scratch with the model:
- **Estimator: straight-through Gumbel-softmax** (Jang et al. 2017, hard samples): each token and layer draws a
  one-hot choice g over n = 0..N from softmax((logits + Gumbel noise) / tau); the forward uses the hard choice,
  the backward the soft sample's gradient. The FFN's output is `Σ_i m_i · learner_i(u)` with `m_i = Σ_{n>i} g_n`
  (1 where learner i runs): every learner runs on every token so that the gate gets a gradient, and a learner
  that did not run gets none. The noise comes from torch's global generator, like dropout's.
- **Budget loss** (ACM's L1 form): `aux = budget_weight · |mean(n / N) − target|`, the mean over every token and
  layer of the batch, n the realised (hard) choice with the straight-through gradient. `budget` is the FFN FLOPs
  over the full FFN's, and the gate is FFN compute too, so the learners aim at `target = budget − (N + 1) / (3 d_big)`
  (the gate's share; 0.3 points at N = 4, d_big = 2048).

At evaluation the gate's argmax decides, shifted by one calibration offset (below): a token's choice depends on
its own state only, so the entrant is causal by construction, and each learner runs on the rows that chose it
only (gather, run, add back: the readable reference, like model/ffn.py's RoutedFFN).

**Calibration.** The budget loss holds the *sampled* choices near the budget in training; the argmax may spend
more or less (far less with the entropy term). `calibrate(windows)` sets one offset λ (a persistent buffer, saved
with the weights) that lowers choice n's logit by `λ · n / N` at every layer, found by bisection on windows that
the evaluation does not score (the arena takes training text) so that the realised mean learners fraction under
`eval()` equals the target. The realised fraction falls monotonically as λ grows (the penalty is linear in n), so
bisection converges. λ is 0 until `calibrate` is called, and it applies in training too (calibrate after
training).

Skipped from ACM: its representation-distillation and gate-pretraining phases. Both convert a *pretrained* dense
model (learner prefixes distilled to reproduce the dense FFN's output, then the gate trained on labels of the
fewest learners within an error threshold); the arena trains every entrant from scratch, so only ACM's third
phase, end-to-end training with the budget loss, is used. ACM's entropy term is an option (`entropy`, default 0):
`entropy · (1 − H)`, H the entropy of each sequence's choices at each layer over its tokens, normalised by
log(N + 1) and averaged, which keeps the gate from settling on one n for every token; its diversity term is left
out.

FLOPs per token (routing/cost.py's convention, 2 per weight): attention as the cost table counts it, at the
token's own causal context (position p reads p + 1 keys: the mean over a window equals the table's mean context,
and a token costs the same decoded or in a full forward); `n_l · (6·d·d_big / N)` for the learners run at layer
l (1/N of the table's BIG module each); the gate's `2·d·(N + 1)` at every layer; the head `2·d·V` once.
`out.stats`: `learners` (mean n / N over tokens and layers), `skip` (the share of n = 0) and `ffn` (learners and
gates over the full FFN's FLOPs, to set against `budget`); `out.aux` is the budget loss plus the entropy term.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from duollm.errors import DuoError
from duollm.methods.base import Entrant, MethodOutput, bisect
from duollm.model.ffn import SwiGLU
from duollm.model.transformer import Attention, DuoConfig, KVCache, add_trunk, init_weights
from duollm.routing.cost import cost_table
from duollm.routing.route import Choice


class LearnerFFN(nn.Module):
    """One layer's FFN as N nested learners (SwiGLU slices of width d_big / N) and the gate that picks how many run."""

    def __init__(self, d_model: int, d_big: int, n_learners: int):
        super().__init__()
        self.n = n_learners
        self.learners = nn.ModuleList(SwiGLU(d_model, d_big // n_learners) for _ in range(n_learners))
        self.gate = nn.Linear(d_model, n_learners + 1)  # logits over n = 0..N learners, with a bias
        self.register_buffer("steps", torch.arange(n_learners + 1) / n_learners, persistent=False)  # (N+1,) n / N

    def logits(self, u: Tensor, offset: Tensor) -> Tensor:
        """Gate logits (B, T, N+1) in fp32 from the normalised state u (B, T, C); choice n loses `offset · n / N`."""
        return self.gate(u).float() - offset * self.steps  # (B, T, N+1)

    def run(self, u: Tensor, n: Tensor) -> Tensor:
        """The FFN's output (B, T, C) when each token runs its first `n` (B, T) int learners: learner i runs on the
        rows with n > i only, and its output is added back to them; a token with n = 0 gets zeros."""
        B, T, C = u.shape
        flat, picks = u.reshape(B * T, C), n.reshape(B * T)  # (N_tok, C), (N_tok,)
        out = None
        for i, learner in enumerate(self.learners):
            idx = torch.nonzero(picks > i).squeeze(1)  # (n_i,) rows that run learner i; nested: n_i shrinks with i
            if idx.numel() == 0:
                break  # no token runs learner i, so none runs a later one
            y = learner(flat.index_select(0, idx))  # (n_i, C)
            out = y.new_zeros(B * T, C) if out is None else out  # in the learners' dtype (bf16 under autocast)
            out = out.index_add(0, idx, y)
        return torch.zeros_like(u) if out is None else out.view(B, T, C)

    def mix(self, u: Tensor, g: Tensor) -> Tensor:
        """Output (B, T, C) under choice weights g (B, T, N+1) over n = 0..N (a one-hot with a straight-through
        gradient in training): `Σ_i m_i · learner_i(u)` with `m_i = Σ_{n>i} g_n`. Every learner runs on every token,
        as one SwiGLU of the concatenated weights whose hidden units of learner i are scaled by m_i (three matmuls
        of width d_big, not 3N narrow ones)."""
        m = g.flip(-1).cumsum(-1).flip(-1)[..., 1:]  # (B, T, N): m_i = P(n > i), 0/1 when g is hard
        gate = torch.cat([learner.gate.weight for learner in self.learners])  # (d_big, C)
        up = torch.cat([learner.up.weight for learner in self.learners])  # (d_big, C)
        down = torch.cat([learner.down.weight for learner in self.learners], dim=1)  # (C, d_big)
        h = F.silu(F.linear(u, gate)) * F.linear(u, up)  # (B, T, d_big)
        h = h * m.repeat_interleave(h.shape[-1] // self.n, dim=-1).to(h.dtype)  # (B, T, d_big): learner i's units × m_i
        return F.linear(h, down)  # (B, T, C)

    def forward(self, u: Tensor, offset: Tensor, tau: float) -> tuple[Tensor, Tensor, Tensor]:
        """`u` (B, T, C) → (output (B, T, C), the choice g (B, T, N+1) fp32 one-hot over n = 0..N, with the
        straight-through gradient in training, n (B, T) uint8). Training samples a hard Gumbel-softmax choice; eval
        takes the argmax."""
        z = self.logits(u, offset)  # (B, T, N+1)
        if self.training:
            g = F.gumbel_softmax(z, tau=tau, hard=True)  # (B, T, N+1): one-hot forward, soft gradient
            return self.mix(u, g), g, g.argmax(-1).to(torch.uint8)
        n = z.argmax(-1)  # (B, T) int64: ties go to the fewest learners
        return self.run(u, n), F.one_hot(n, self.n + 1).float(), n.to(torch.uint8)


class ACMBlock(nn.Module):
    """Attention for every token, then the learners the gate picks: the residual stream in two lines."""

    def __init__(self, cfg: DuoConfig, n_learners: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)  # the gate and the learners see the same state
        self.ffn = LearnerFFN(cfg.d_model, cfg.d_big, n_learners)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv, offset: Tensor, tau: float) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, C) → (x (B, T, C), the choice (B, T, N+1), learners run (B, T) uint8)."""
        x = x + self.attn(self.attn_norm(x), cos, sin, kv)  # (B, T, C): always runs
        y, g, n = self.ffn(self.ffn_norm(x), offset, tau)
        return x + y, g, n


class Trace(NamedTuple):
    """The trunk's result: the final residual stream and each token's decisions."""

    x: Tensor  # (B, T, C) before the final norm
    choice: Tensor  # (B, T, L, N+1) fp32: one-hot over n = 0..N (straight-through gradient in training)
    counts: Tensor  # (B, T, L) uint8: learners run, 0..N


class ACM(Entrant):
    """A Duo-style decoder whose every FFN is an ACM: N nested learners and a gate (module docstring).

    Options: `learners` N (d_big must divide by it), `budget` the target learners fraction (FFN FLOPs over the full
    FFN's), `tau` the Gumbel-softmax temperature, `budget_weight` the budget loss's weight, `entropy` the weight of
    ACM's entropy term (0: none)."""

    method = "acm"

    def __init__(
        self, cfg: DuoConfig, learners: int = 4, budget: float = 0.5, tau: float = 1.0, budget_weight: float = 1.0, entropy: float = 0.0
    ):
        super().__init__(cfg, learners=learners, budget=budget, tau=tau, budget_weight=budget_weight, entropy=entropy)
        if not isinstance(learners, int) or learners < 1 or cfg.d_big % learners:
            raise DuoError(f"acm: learners must be a positive integer dividing d_big ({cfg.d_big}), got {learners!r}")
        if not 0.0 <= budget <= 1.0:
            raise DuoError(f"acm: budget is a fraction of the FFN's FLOPs in [0, 1], got {budget}")
        if not tau > 0:
            raise DuoError(f"acm: tau must be positive, got {tau}")
        self.n_learners, self.budget, self.tau, self.budget_weight = learners, float(budget), float(tau), float(budget_weight)
        self.entropy = float(entropy)
        # the gate is FFN compute too: the learners aim at the budget less the gate's share of a full FFN
        table = cfg.cost()
        self.gate_share = self.gate_flops() / float(table.ffn[:, Choice.BIG].sum())  # (N+1) / (3 d_big)
        self.target = self.budget - self.gate_share  # the learners fraction to reach
        if self.target < 0:
            raise DuoError(f"acm: budget {budget} is below the gates' own share of the FFN FLOPs ({self.gate_share:.4f})")
        add_trunk(self, cfg, (ACMBlock(cfg, learners) for _ in range(cfg.n_layer)))
        self.register_buffer("offset", torch.zeros(()))  # calibration λ (0-d), saved with the weights
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DuoLM's init: Normal(0, init_std) matrices, projections into the residual stream scaled down by
        sqrt(2 L); gate biases 0, so every n starts equally likely (an expected fraction of 1/2)."""
        init_weights(self, self.cfg)

    def gate_flops(self) -> float:
        """FLOPs per token of the gates of all layers: a d × (N+1) matrix each, 2 FLOPs per weight (cost.py)."""
        return float(2 * self.cfg.d_model * (self.n_learners + 1) * self.cfg.n_layer)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """Attention runs for every token at every layer, so the Duo model's KV cache serves as it is."""
        p = self.embed.weight
        return KVCache.empty(self.cfg, batch, max_len, device=p.device, dtype=p.dtype)

    def trunk(self, ids: Tensor, cache: KVCache | None = None) -> Trace:
        """Embedding and blocks over `ids` (B, T) int64, continuing `cache` if given (cache.pos advances by T)."""
        T = ids.shape[1]
        pos = 0 if cache is None else int(cache.pos)
        if pos + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {pos + T} exceeds max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, hs/2)
        x = self.embed(ids)  # (B, T, C)
        choices, counts = [], []
        for l, block in enumerate(self.blocks):
            x, g, n = block(x, cos, sin, None if cache is None else cache.layer(l), self.offset, self.tau)
            choices.append(g)
            counts.append(n)
        if cache is not None:
            cache.pos += T
        return Trace(x, torch.stack(choices, dim=2), torch.stack(counts, dim=-1))  # (B, T, C), (B, T, L, N+1), (B, T, L)

    def token_flops(self, counts: Tensor, pos: int = 0) -> Tensor:
        """Forward FLOPs (B, T) float64 of tokens at positions pos.. that ran `counts` (B, T, L) learners per layer."""
        c, T = self.cfg, counts.shape[1]
        # attention at position p reads p + 1 keys, the mean causal context of a sequence of 2p + 1 tokens:
        # cost.py's attention is affine in that context, so two tables give its value at every position
        one, three = (cost_table(c.n_layer, c.d_model, c.d_big, c.d_small, c.vocab_size, s, c.n_head, c.n_kv_head) for s in (1, 3))
        p = torch.arange(pos, pos + T, dtype=torch.float64, device=counts.device)  # (T,)
        attn = one.attn.sum().item() + p * (three.attn.sum() - one.attn.sum()).item()  # (T,) all layers
        learner = one.ffn[:, Choice.BIG].to(counts.device) / self.n_learners  # (L,) one learner is 1/N of BIG
        return attn + (counts.double() * learner).sum(-1) + self.gate_flops() + one.head  # (B, T)

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache: KVCache | None = None) -> MethodOutput:
        """`ids` (B, T) int64, `targets` (B, T) or None (ignore_index -1), `cache` from `new_cache` or None."""
        pos = 0 if cache is None else int(cache.pos)
        x, choice, counts = self.trunk(ids, cache)
        logits = F.linear(self.norm(x), self.embed.weight if self.lm_head is None else self.lm_head.weight)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        steps = torch.arange(self.n_learners + 1, device=choice.device) / self.n_learners  # (N+1,) n / N
        realised = (choice * steps).sum(-1).mean()  # scalar: mean learners fraction over tokens and layers
        aux = self.budget_weight * (realised - self.target).abs()
        if self.entropy > 0:  # ACM's entropy term: each sequence's tokens spread over the choices, at every layer
            share = choice.mean(1)  # (B, L, N+1): a sequence's choice distribution at each layer
            h = -(share * share.clamp_min(1e-9).log()).sum(-1) / math.log(self.n_learners + 1)  # (B, L) in [0, 1]
            aux = aux + self.entropy * (1 - h.mean())
        shares = torch.stack([realised.detach(), (counts == 0).float().mean()]).tolist()  # one host sync
        stats = {"learners": shares[0], "skip": shares[1], "ffn": shares[0] + self.gate_share}
        return MethodOutput(logits=logits, loss=loss, aux=aux, flops=self.token_flops(counts, pos), stats=stats)

    @torch.no_grad()
    def realised_fraction(self, windows: Tensor, batch_size: int = 16) -> float:
        """Mean learners fraction under `eval()` over `windows` (W, T) int64, in batches of `batch_size`."""
        was_training = self.training
        self.eval()
        total = sum(self.trunk(w).counts.double().sum().item() for w in windows.split(batch_size))
        self.train(was_training)
        return total / (windows.numel() * self.cfg.n_layer * self.n_learners)

    @torch.no_grad()
    def calibrate(self, windows: Tensor, batch_size: int = 16, iters: int = 30) -> float:
        """Set the offset λ by bisection so that the mean learners fraction under `eval()` over held-out `windows`
        (W, T) int64 is `target` (the budget less the gates' share); returns the FFN share reached, learners and gates
        (a step function of λ: as close to the budget as the windows' tokens allow). The train/eval mode is kept."""
        windows = windows.to(self.offset.device)

        def at(lam: float) -> float:  # the learners fraction under offset lam
            self.offset.fill_(lam)
            return self.realised_fraction(windows, batch_size)

        return bisect(at, self.target, iters)[1] + self.gate_share  # the fraction falls as λ grows

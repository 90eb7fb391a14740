"""`dense`: the arena's baseline, a Llama model with one SwiGLU FFN of width `d_ff` in every layer (issue 21, entrant 1).

The Duo model's pieces without the routing: model/transformer.py's `Attention`, `KVCache` and RoPE tables, an
RMSNorm before each module, model/ffn.py's `SwiGLU`, the output head tied to the embedding (or not, as the backbone
config says). Every token runs every layer, so the model is causal and decodes through the KV cache like `DuoLM`.

- `build("dense", cfg)`: the FFN at BIG's width, `d_ff = cfg.d_big`: the Duo model's all-BIG compute.
- `build("dense", cfg, budget=0.5)`: the dense model of equal FLOPs (`width_for_budget`): its FFN spends `budget`
  of BIG's FFN FLOPs per token, as an adaptive entrant at that budget does on average; attention and the head cost
  the same in every entrant.
- `build("dense", cfg, d_ff=N)`: any width.
- `build("dense", cfg, skipllm=T)`: FFN-SkipLLM on the dense model, the training-free reference point of the arena
  (Jaiswal et al. 2024, arXiv:2404.03865; routers/training_free.py `FFNSkip`, the policy `skipllm:T` of Duo models).
  Training is the plain dense model's (so `dense:skipllm=T` shares the training of `dense`: `skipllm` is an
  evaluation option). Under `eval()` a token skips its FFNs once cos(x, x + FFN) was at least T at the last 2 layers
  whose FFN ran, never in the first 2 and last 2 layers nor at the first 8 positions (FFNSkip's defaults). A
  token's decisions depend on its own states only, so it stays causal and decodes as in one forward. The readable
  path computes every FFN and keeps the skipped tokens' residual streams (`torch.where`); `out.flops` counts only
  the FFNs that ran. 0 (the default) is off; a threshold above 1 never skips.

FLOPs per token (routing/cost.py's convention, 2 per weight): attention projections and scores, the scores at the
token's own causal context (position p reads p + 1 keys; the mean over a window from position 0 is the table's mean
context, and a token costs the same decoded as in a full forward), `6·d·d_ff` per layer for the FFN and `2·d·V` for
the head.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from duollm.errors import DuoError
from duollm.methods.base import Entrant, MethodOutput
from duollm.model.ffn import SwiGLU
from duollm.model.transformer import Attention, DuoConfig, KVCache, add_trunk, init_weights
from duollm.routers.training_free import FFNSkip
from duollm.routing.cost import CostTable, cost_table
from duollm.routing.route import Choice


def attention_flops(cfg: DuoConfig, positions: Tensor) -> Tensor:
    """Attention FLOPs of every layer together for tokens at `positions` (any shape, int) → float64, same shape.

    Position p reads p + 1 keys, the mean causal context of a sequence of 2p + 1 tokens; cost.py's attention is
    affine in the sequence length, so the tables at lengths 1 and 3 give it at every position."""
    one, three = float(cfg.cost(1).attn.sum()), float(cfg.cost(3).attn.sum())
    return one + positions.to(torch.float64) * (three - one)


def width_for_budget(cfg: DuoConfig, budget: float) -> int:
    """The FFN width whose FLOPs per token are `budget` of BIG's: `round(budget · d_big)` (an FFN's FLOPs, 6·d·d_ff,
    are linear in its width), at least 1. budget 0.5 and 0.33 give the dense models of equal FLOPs of issue 21."""
    if not 0 < budget <= 1:
        raise DuoError(f"dense: budget is a fraction of BIG's FFN FLOPs in (0, 1], got {budget}")
    return max(1, round(budget * cfg.d_big))


class DenseBlock(nn.Module):
    """Attention, then one SwiGLU for every token: the residual stream in two lines."""

    def __init__(self, cfg: DuoConfig, d_ff: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, d_ff)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv=None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, kv)  # (B, T, C)
        return x + self.ffn(self.ffn_norm(x))  # (B, T, C)


class DenseLM(Entrant):
    """Token embedding → dense blocks → final norm → output head. Options: `d_ff` (0 = cfg.d_big) or `budget`;
    `skipllm` (FFN-SkipLLM's threshold under eval(), 0 = off)."""

    method = "dense"
    fixed_compute = True
    eval_options = ("skipllm",)

    def __init__(self, cfg: DuoConfig, d_ff: int = 0, budget: float = 0.0, skipllm: float = 0.0):
        super().__init__(cfg, d_ff=d_ff, budget=budget, skipllm=skipllm)
        if d_ff and budget:
            raise DuoError("dense: give d_ff or budget, not both")
        if not isinstance(skipllm, int | float) or skipllm < 0:
            raise DuoError(f"dense: skipllm is FFN-SkipLLM's cosine threshold (0 = off), got {skipllm!r}")
        self.skipllm = float(skipllm)
        self.fixed_compute = not skipllm  # with skipping, a token's compute depends on the weights
        if not isinstance(d_ff, int) or d_ff < 0:
            raise DuoError(f"dense: d_ff must be a positive integer (0 = d_big), got {d_ff!r}")
        self.d_ff = width_for_budget(cfg, budget) if budget else d_ff or cfg.d_big
        self.budget = self.d_ff / cfg.d_big  # its FFN FLOPs per token as a fraction of BIG's (the arena's target)
        add_trunk(self, cfg, (DenseBlock(cfg, self.d_ff) for _ in range(cfg.n_layer)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DuoLM's init: Normal(0, init_std) matrices, the projections into the residual stream scaled by 1/sqrt(2L)."""
        init_weights(self, self.cfg)

    def table(self, seq_len: int | None = None) -> CostTable:
        """The cost table of this model: cost.py's with BIG at width d_ff (every layer takes BIG)."""
        c = self.cfg
        T = c.max_seq_len if seq_len is None else seq_len
        return cost_table(c.n_layer, c.d_model, self.d_ff, c.d_small, c.vocab_size, T, c.n_head, c.n_kv_head)

    def token_flops(self, positions: Tensor) -> Tensor:
        """Forward FLOPs (float64, the shape of `positions`) of tokens at `positions`: attention, FFN, head."""
        t = self.table(1)
        return attention_flops(self.cfg, positions) + float(t.ffn[:, Choice.BIG].sum()) + t.head

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.embed.weight
        return KVCache.empty(self.cfg, batch, max_len, device=p.device, dtype=p.dtype)

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache: KVCache | None = None) -> MethodOutput:
        """`ids` (B, T) int64, `targets` (B, T) or None (ignore_index -1), `cache` from `new_cache` or None."""
        B, T = ids.shape
        pos = 0 if cache is None else int(cache.pos)
        if pos + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {pos + T} exceeds max_seq_len {self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, hs/2)
        x = self.embed(ids)  # (B, T, C)
        at = torch.arange(pos, pos + T, device=ids.device).expand(B, T)  # (B, T) positions
        skip = FFNSkip(self.skipllm) if self.skipllm and not self.training else None
        skipped = torch.zeros(B, T, dtype=torch.long, device=ids.device)  # (B, T) FFNs skipped per token
        if skip is not None:
            skip.start(self, at)
        for l, block in enumerate(self.blocks):
            kv = None if cache is None else cache.layer(l)
            if skip is None:
                x = block(x, cos, sin, kv)
                continue
            a = x + block.attn(block.attn_norm(x), cos, sin, kv)  # (B, T, C)
            off = skip(l, a) == Choice.SKIP  # (B, T) bool: saturated tokens skip this FFN
            y = torch.where(off[..., None], a, a + block.ffn(block.ffn_norm(a)))  # (B, T, C)
            skip.observe(l, a, y)
            skipped += off
            x = y
        if cache is not None:
            cache.pos += T
        logits = F.linear(self.norm(x), self.embed.weight if self.lm_head is None else self.lm_head.weight)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        ffn = float(self.table(1).ffn[0, Choice.BIG])  # one layer's FFN
        flops = self.token_flops(at.cpu()) - ffn * skipped.cpu().double()  # (B, T) float64
        stats = {"d_ff": float(self.d_ff), "ffn_skipped": float(skipped.float().mean()) / self.cfg.n_layer}
        return MethodOutput(logits=logits, loss=loss, aux=torch.zeros((), device=ids.device), flops=flops.to(ids.device), stats=stats)

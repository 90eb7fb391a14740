"""FLOPs per token of every layer and choice: the one place where compute is counted (docs/design.md §1, §7.9).

Counting convention (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", Table 1; the same as
the Chinchilla and PaLM MFU accounting): a matrix multiply of an `m × n` weight with one token's vector
costs `2·m·n` FLOPs (one multiply and one add per weight). Norms, RoPE, softmax and the SwiGLU gate are
elementwise and left out, as is customary. For one token in a sequence of length `T`:

- attention projections: `2·d·(d_q + 2·d_kv + d_q)` with `d_q = d`, `d_kv = d·n_kv_head/n_head`;
- attention scores and the weighted sum: `2·2·d·c` where `c` is the number of keys the token attends to;
  averaged over the `T` positions of a causal sequence `c = (T + 1) / 2`, so `2·d·(T + 1)`;
- a SwiGLU module of width `f` (gate, up and down matrices): `2·3·d·f`; SKIP costs 0;
- the output head: `2·d·V`, once more for each extra evaluation (an early exit's check); the embedding lookup costs 0.

Training costs three times the forward FLOPs (forward + backward for activations and weights).
Example, `paper-1.4b` (d = 2560): big module 6·2560·10240 = 157.3 MFLOP, small 9.8 MFLOP, attention
projections 8·2560² = 52.4 MFLOP per layer (arXiv:2410.10846 §3.1; docs/design.md, "The method").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CostTable:
    """Forward FLOPs per token. `ffn[l, c]` is layer `l`'s FFN under choice `c` (SKIP, SMALL, BIG)."""

    attn: Tensor  # (L,) float64: projections + scores, every layer, every token
    ffn: Tensor  # (L, 3) float64: indexed by Choice
    head: float  # output projection to the vocabulary
    ffn_params: Tensor  # (L, 3) float64: weights each choice reads (decode is bound by these bytes)

    @property
    def n_layer(self) -> int:
        return self.ffn.shape[0]


def cost_table(
    n_layer: int,
    d_model: int,
    d_big: int,
    d_small: int,
    vocab_size: int,
    seq_len: int,
    n_head: int = 1,
    n_kv_head: int | None = None,
) -> CostTable:
    """Build the per-layer, per-choice FLOP table from plain sizes (the model passes its config fields)."""
    n_kv_head = n_head if n_kv_head is None else n_kv_head
    d_kv = d_model * n_kv_head // n_head
    proj = 2 * d_model * (2 * d_model + 2 * d_kv)  # q, o: d×d each; k, v: d×d_kv each
    scores = 2 * d_model * (seq_len + 1)  # 2·2·d·c with mean causal context c = (T+1)/2
    attn = torch.full((n_layer,), float(proj + scores), dtype=torch.float64)  # (L,)
    params = torch.tensor([0.0, 3 * d_model * d_small, 3 * d_model * d_big], dtype=torch.float64)  # (3,)
    ffn_params = params.expand(n_layer, 3).clone()  # (L, 3)
    return CostTable(attn=attn, ffn=2 * ffn_params, head=float(2 * d_model * vocab_size), ffn_params=ffn_params)


def route_cost(route: Tensor, table: CostTable) -> Tensor:
    """Forward FLOPs per token of `route` (`(L,)` → scalar, `(B, T, L)` → `(B, T)`), float64.

    Attention and the head are always paid; each layer adds `table.ffn[l, route[..., l]]`.
    """
    L = table.n_layer
    if route.shape[-1] != L:
        raise ValueError(f"route has {route.shape[-1]} layers, the cost table has {L}")
    layer = torch.arange(L)  # (L,)
    ffn = table.ffn[layer, route.long()]  # (..., L): broadcast layer index against the route's last axis
    return ffn.sum(-1) + table.attn.sum() + table.head  # (...)


def dense_cost(table: CostTable, choice: int = 2) -> float:
    """Forward FLOPs per token when every layer takes `choice` (BIG by default): the dense reference."""
    return float(route_cost(torch.full((table.n_layer,), choice, dtype=torch.uint8), table))


def head_check_cost(checks: Tensor, table: CostTable) -> Tensor:
    """Forward FLOPs of `checks` extra evaluations of the output head per token (an early exit's confidence checks,
    routers/training_free.py), any shape → the same shape, float64: `checks · table.head`.

    Each check is the final norm (elementwise, not counted) and the `d × V` output projection; the softmax over
    the vocabulary is elementwise too. Add it to `route_cost` of the route the token took."""
    return checks.to(torch.float64) * table.head

"""What every oracle returns (`SearchResult`), and the head's next-token losses the searches share: over whole
sequences (`head_loss`) and over gathered rows (`rows_loss`), compiled on a GPU, chunked to bound the logits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from duollm.model.transformer import DuoLM


@dataclass
class SearchResult:
    """Per-token oracle losses and routes under one budget, and the best single route (`fixed`)."""

    loss: Tensor  # (B, T-1) float32: min over the route set of each token's next-token loss
    route: Tensor  # (B, T-1, L) uint8: the route achieving it
    fixed_route: Tensor  # (L,) uint8: the route with the lowest mean loss over all tokens
    fixed_loss: Tensor  # (B, T-1) float32: every token's loss under fixed_route
    n_routes: int  # size of the route set searched (per position, for a schedule: the largest)
    routes: Tensor | None = None  # (R, L) uint8: the route set, in Budget.routes order (shared mode, one budget)
    route_pos_totals: Tensor | None = None  # (R, T-1) float64: each route's token loss summed over the batch
    candidates: Tensor | None = None  # (B, T-1, R): every route's loss for every token (causal: given the past), if kept

    @property
    def route_totals(self) -> Tensor:
        """(R,) float64: summed token loss of each route (add over chunks for a global `fixed`)."""
        return self.route_pos_totals.sum(1)


def token_loss(logits: Tensor, ids: Tensor) -> Tensor:
    """Next-token cross-entropy per position: logits (B, T, V), ids (B, T) → (B, T-1) float32."""
    B, T, V = logits.shape  # rows of V: the (B, V, T) layout's spatial kernel is several times slower
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, V), ids[:, 1:].reshape(-1), reduction="none").view(B, T - 1)


HEAD_CHUNK = 2**28  # logits elements per head call: bounds the (B, T, V) tensor at leaves (1 GiB in fp32)


def _nll(x: Tensor, norm_w: Tensor, eps: float, emb_w: Tensor, target: Tensor) -> Tensor:
    """Final norm, head and the loss of predicting `target`: states x (..., C), target (...) → (...) float32."""
    logits = F.linear(F.rms_norm(x, (x.shape[-1],), norm_w, eps), emb_w)  # (..., V)
    picked = logits.gather(-1, target[..., None]).squeeze(-1)
    return torch.logsumexp(logits.float(), -1) - picked.float()


def _fused_nll(h: Tensor, norm_w: Tensor, eps: float, emb_w: Tensor, ids: Tensor) -> Tensor:
    """Final norm, head and next-token loss in one expression, for torch.compile: (b, T, C) → (b, T-1).

    Compiled, the logits are written once in the matmul's dtype and read once by a fused logsumexp, instead
    of also being copied to fp32 and read again by cross_entropy (the head is most of a tree walk's work)."""
    return _nll(h[:, :-1], norm_w, eps, emb_w, ids[:, 1:])


@functools.cache
def _compiled(fn):
    # static shapes: a search sees one or two chunk shapes; dynamic ones hit an inductor assertion on torch 2.11
    # when the vocabulary is odd (257)
    return torch.compile(fn, dynamic=False)


def head_loss(model: DuoLM, h: Tensor, ids: Tensor) -> Tensor:
    """Next-token loss (B, T-1) of hidden states h (B, T, C), in batch chunks of ≤ HEAD_CHUNK logits.

    On a GPU through the compiled `_fused_nll`; elsewhere the plain head and `token_loss` (what tests compare)."""
    B, T, _ = h.shape
    step = max(1, HEAD_CHUNK // (T * model.cfg.vocab_size))
    if h.is_cuda:
        n, fn = model.norm, _compiled(_fused_nll)
        return torch.cat([fn(h[i : i + step], n.weight, n.eps, model.output_weight, ids[i : i + step]) for i in range(0, B, step)])
    return torch.cat([token_loss(model.head(h[i : i + step]), ids[i : i + step]) for i in range(0, B, step)])


def rows_loss(model: DuoLM, x: Tensor, target: Tensor) -> Tensor:
    """Loss of predicting target (n,) from states x (n, C) → (n,) float32, in chunks of ≤ HEAD_CHUNK logits.

    On a GPU through the compiled `_nll`, every chunk padded to the same number of rows, so that one compiled
    shape serves any n (the causal oracle's leaf count changes with the budget); elsewhere the plain head."""
    n, C = x.shape
    rows = max(1, HEAD_CHUNK // model.cfg.vocab_size)
    if not x.is_cuda:
        return torch.cat(
            [F.cross_entropy(model.head(x[i : i + rows]).float(), target[i : i + rows], reduction="none") for i in range(0, n, rows)]
        )
    fn, w = _compiled(_nll), model.norm
    out = []
    for i in range(0, n, rows):
        xi, ti = x[i : i + rows], target[i : i + rows]
        if len(xi) < rows:  # pad the last chunk: one compiled shape
            xi = torch.cat([xi, xi.new_zeros(rows - len(xi), C)])
            ti = torch.cat([ti, ti.new_zeros(rows - len(ti))])
        out.append(fn(xi, w.weight, w.eps, model.output_weight, ti)[: n - i])
    return torch.cat(out)


class Best:
    """Running per-token minimum and argmin, and the running best mean route, for one budget: what a search keeps of
    the routes it evaluates (the exhaustive walk: every route of the set, in order; a beam: the routes it scored)."""

    def __init__(self, B: int, T: int, L: int, device, keep: bool = False):
        self.loss = torch.full((B, T - 1), float("inf"), device=device)  # (B, T-1)
        self.route = torch.zeros(B, T - 1, L, dtype=torch.uint8, device=device)  # (B, T-1, L)
        self.fixed_total, self.fixed_route, self.fixed_loss = float("inf"), None, None
        self.routes: list[Tensor] = []  # visited routes, in walk order (= Budget.routes order)
        self.totals: list[Tensor] = []  # (T-1,) float64 per visited route
        self.kept: list[Tensor] | None = [] if keep else None  # (B, T-1) per visited route

    def update(self, loss: Tensor, route: Tensor) -> None:
        better = loss < self.loss  # (B, T-1): strict, so the first route wins ties
        self.loss = torch.where(better, loss, self.loss)
        self.route[better] = route.to(self.route.device)
        pos = loss.double().sum(0)  # (T-1,)
        total = float(pos.sum())  # one host sync per leaf and budget
        if total < self.fixed_total:
            self.fixed_total, self.fixed_route, self.fixed_loss = total, route.clone(), loss
        self.routes.append(route.clone())
        self.totals.append(pos)
        if self.kept is not None:
            self.kept.append(loss)

    def result(self) -> SearchResult:
        n = len(self.routes)
        return SearchResult(
            self.loss,
            self.route,
            self.fixed_route,
            self.fixed_loss,
            n,
            torch.stack(self.routes),
            torch.stack(self.totals).cpu(),
            torch.stack(self.kept, dim=-1) if self.kept is not None else None,
        )

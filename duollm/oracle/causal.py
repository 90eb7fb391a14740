"""The causal oracle (docs/design.md §2, ours): left to right, each token takes its own best route.

Token t's route is the one in its budget's set that gives the lowest loss for token t, with every earlier
token fixed to the route already chosen for it: a realisable policy apart from knowing the label, and the
honest ceiling for a causal router. Ties go to the first route in `Budget.routes` order.

How: a KV cache per layer holds the keys and values of tokens < t under their chosen routes. All R
candidate routes of token t run as one batch, level by level down the route tree: at depth j the distinct
route prefixes of length j (N_j of them) are the batch, attention of each against the shared cache is one
matmul, and each child runs only its own FFN module. The head runs once per leaf. The keys and values of
the winning path are then written into the cache, so no forward is repeated.

Reference for tests: `causal_reference`, which recomputes every prefix from scratch for every candidate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from duollm.model.transformer import DuoLM, apply_rope
from duollm.oracle.groups import Groups
from duollm.oracle.loss import SearchResult, rows_loss
from duollm.routing.budget import Budget, Schedule, per_position
from duollm.routing.route import Choice


class _Tree:
    """A budget's route set as a tree, built once on the host and kept on the search's device: per depth, each
    node's parent, and for each module the children that take it (and their parents)."""

    def __init__(self, routes: Tensor, device):
        R, L = routes.shape
        self.routes = routes.to(device)  # (R, L) uint8, lexicographic
        inv = [torch.zeros(R, dtype=torch.long)]  # inv[j][r]: node of route r at depth j
        self.parent, self.modules = [], []  # per depth j+1: (N_{j+1},) parent at depth j; [(module, children, parents)]
        for j in range(1, L + 1):
            uniq, idx = torch.unique(routes[:, :j], dim=0, return_inverse=True)  # sorted = lexicographic
            parent = torch.empty(len(uniq), dtype=torch.long)
            parent[idx] = inv[-1]
            self.parent.append(parent.to(device))
            mods = []
            for c, name in ((Choice.SMALL, "small"), (Choice.BIG, "big")):  # SKIP children add nothing
                rows = (uniq[:, -1] == c).nonzero().squeeze(1)
                if len(rows):
                    mods.append((name, rows.to(device), parent[rows].to(device)))
            self.modules.append(mods)
            inv.append(idx)
        self.inv = [i.to(device) for i in inv]  # the leaves are inv[L] = 0..R-1 in route order


def _attend(blk, x: Tensor, k_cache: Tensor, v_cache: Tensor, t: int, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Attention of N candidate states x (N, B, C) of token t to the cache (B, nkv, t, hs) and to themselves.

    Returns (output (N, B, C), k (N, B, nkv, hs), v (N, B, nkv, hs)); k is already rotated."""
    at = blk.attn
    N, B, C = x.shape
    h = at.nh // at.nkv
    q = apply_rope(at.q(x).view(N, B, at.nh, at.hs).permute(1, 2, 0, 3), cos, sin)  # (B, nh, N, hs)
    k = apply_rope(at.k(x).view(N, B, at.nkv, at.hs).permute(1, 2, 0, 3), cos, sin)  # (B, nkv, N, hs)
    v = at.v(x).view(N, B, at.nkv, at.hs).permute(1, 2, 0, 3)  # (B, nkv, N, hs)
    qg = q.view(B, at.nkv, h, N, at.hs)  # query heads grouped by the key/value head they share (no cache copy)
    kc, vc = k_cache[:, :, :t], v_cache[:, :, :t]  # (B, nkv, t, hs) views of the cache
    scale = 1.0 / math.sqrt(at.hs)
    s_cache = (qg.reshape(B, at.nkv, h * N, at.hs) @ kc.transpose(-1, -2)).view(B, at.nkv, h, N, t)
    s_self = (qg * k[:, :, None]).sum(-1, keepdim=True)  # (B, nkv, h, N, 1): each candidate's own key
    p = (torch.cat([s_cache, s_self], dim=-1) * scale).float().softmax(-1).type_as(q)  # (B, nkv, h, N, t+1)
    y = (p[..., :t].reshape(B, at.nkv, h * N, t) @ vc).view(B, at.nkv, h, N, at.hs) + p[..., t:] * v[:, :, None]
    y = y.reshape(B, at.nh, N, at.hs)  # (B, nh, N, hs)
    out = at.o(y.permute(2, 0, 1, 3).reshape(N, B, C))  # (N, B, C)
    return out, k.permute(2, 0, 1, 3), v.permute(2, 0, 1, 3)


@torch.no_grad()
def causal_search(model: DuoLM, ids: Tensor, budget: Budget | Schedule, keep: bool = False, groups: Groups | None = None) -> SearchResult:
    """Causal oracle for a Budget or a Schedule; returns loss (B, T-1) and route (B, T-1, L).

    `keep=True` (one Budget): also every candidate's loss, `candidates` (B, T-1, R) in route order — the loss
    each route would give token t after the oracle's own choices for tokens < t (what a router learns from).
    `groups` (groups.py): the candidates are the grouped routes (consecutive layers sharing one choice)."""
    L, cfg = model.cfg.n_layer, model.cfg
    budget.check(L)
    groups = groups or Groups.of(L)
    B, T = ids.shape
    per = per_position(budget, T - 1)
    dev = ids.device
    for b in set(per):
        groups.check(b)
    trees = {b: _Tree(groups.routes(b), dev) for b in set(per)}
    hs = cfg.d_model // cfg.n_head
    k_cache = [torch.empty(B, cfg.n_kv_head, T - 1, hs, device=dev, dtype=model.embed.weight.dtype) for _ in range(L)]
    v_cache = [torch.empty_like(k) for k in k_cache]
    loss = torch.empty(B, T - 1, device=dev)
    if keep and isinstance(budget, Schedule):
        raise ValueError("candidate losses are kept for a single Budget, not a Schedule")
    cand = torch.empty(B, T - 1, len(trees[per[0]].routes), device=dev) if keep else None
    route = torch.empty(B, T - 1, L, dtype=torch.uint8, device=dev)
    bidx = torch.arange(B, device=dev)
    for t in range(T - 1):
        tree = trees[per[t]]
        cos, sin = model.rope_cos[t : t + 1], model.rope_sin[t : t + 1]  # (1, hs/2)
        x = model.embed(ids[:, t]).unsqueeze(0)  # (1, B, C): the root
        ks, vs = [], []  # per depth: (N_j, B, nkv, hs)
        for j, blk in enumerate(model.blocks):
            att, k, v = _attend(blk, blk.attn_norm(x), k_cache[j], v_cache[j], t, cos, sin)
            ks.append(k), vs.append(v)
            a = x + att  # (N_j, B, C)
            u = blk.ffn_norm(a)
            x = a[tree.parent[j]]  # (N_{j+1}, B, C): SKIP children add nothing
            for name, rows, parents in tree.modules[j]:  # the children taking each module
                x[rows] += getattr(blk.ffn, name)(u[parents])
        # head at the leaves: (R, B) losses for predicting token t+1
        leaf = rows_loss(model, x.reshape(-1, x.shape[-1]), ids[:, t + 1].repeat(len(x))).view(len(x), B)
        best = leaf.argmin(0)  # (B,): first minimum = first route in order
        if keep:
            cand[:, t] = leaf.T
        loss[:, t] = leaf.gather(0, best[None]).squeeze(0)
        route[:, t] = tree.routes[best]
        for j in range(L):  # the winning path's keys and values join the cache
            node = tree.inv[j][best]  # best's node at depth j
            k_cache[j][:, :, t] = ks[j][node, bidx]
            v_cache[j][:, :, t] = vs[j][node, bidx]
    n = max(len(tr.routes) for tr in trees.values())
    return SearchResult(loss, route, None, None, n, candidates=cand)


@torch.no_grad()
def causal_reference(model: DuoLM, ids: Tensor, budget: Budget | Schedule) -> tuple[Tensor, Tensor]:
    """Slow reference: for every position and candidate, a plain forward over the whole prefix. → (loss, route)."""
    L = model.cfg.n_layer
    B, T = ids.shape
    per = per_position(budget, T - 1)
    chosen = torch.zeros(B, T, L, dtype=torch.uint8)
    loss = torch.empty(B, T - 1)
    for t in range(T - 1):
        routes = per[t].routes(L)  # (R, L)
        cand = []
        for r in routes:
            full = chosen[:, : t + 1].clone()
            full[:, t] = r
            logits = model(ids[:, : t + 1], route=full).logits[:, t]  # (B, V)
            cand.append(F.cross_entropy(logits.float(), ids[:, t + 1], reduction="none"))
        cand = torch.stack(cand)  # (R, B)
        best = cand.argmin(0)
        loss[:, t] = cand[best, torch.arange(B)]
        chosen[:, t] = routes[best]
    return loss, chosen[:, :-1]

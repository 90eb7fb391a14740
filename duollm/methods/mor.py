"""Mixture-of-Recursions: the `mor` entrant (Bae et al. 2025, "Mixture-of-Recursions: Learning Dynamic Recursive
Depths for Adaptive Token-Level Computation", arXiv:2507.10524).

A Llama decoder whose L = cfg.n_layer blocks (mod.py's `MoDBlock` without a router: attention, then BIG's SwiGLU,
taking an attention mask) form one shared stack, applied up to R times ("recursions", option `recursions`). A token
that runs r recursions goes through r·L blocks; the unique parameters are those of the L blocks (plus the routers),
the dense model's. **Sharing: the paper's Cycle** (the whole stack repeats), not its Middle-Cycle (first and last
layers unique): at the arena's sizes (L = 2 in the tests, 4 in arena-toy) Middle-Cycle would leave zero or two
shared blocks, and Cycle is the simplest honest variant. The init is DuoLM's (model/transformer.py
`init_weights`, projections into the residual stream scaled by 1/sqrt(2L), L the blocks of parameters).

**A recursion's update.** With f(x) = stack(x) − x the change that one pass of the L blocks makes:

    x ← x + g · f(x)     a token that runs recursion r >= 2, g its router weight (below)
    x ← x                a token that has stopped
    x ← stack(x)         recursion 1, which every token runs, and every recursion under routing "none"

The router's weight multiplies the output, as in the paper and in MoE gating: it is how the router gets a gradient
from the language-model loss. A token that stops does not come back (the active sets shrink, recursion by recursion).

**Routing** (option `routing`):
- `"expert"` (expert-choice, the default): before each recursion r >= 2, a router of its own (Linear(d, 1) with a
  bias, one per recursion) scores the tokens still active from the state the stack's first attention reads
  (`blocks[0].attn_norm(x)`); g = sigmoid(z). Training (`model.train()`): top-k of each sequence's active tokens,
  k_r = max(1, round(capacity · k_{r-1})), k_1 = T (the paper's hierarchical filtering; not causal: the k-th
  largest logit depends on later tokens). Evaluation (`eval()`, `routing_eval="causal"`): the causal predictor, as
  in mod.py: the auxiliary BCE of the router's own logits on the top-k decisions (`aux = aux_weight · BCE`, over
  the active tokens of every recursion r >= 2), and under `eval()` an active token continues when z > `offset`
  (0 until `calibrate`). `routing_eval="topk"` evaluates with the training rule over each forward's window: not
  realisable, reported beside the predictor only; it refuses a cache (`decodes` is False).
- `"token"` (token-choice, causal by construction): one router, Linear(d, R) with a bias over the state after
  recursion 1 (`blocks[0].attn_norm(x)`: contextual, and every token computes it anyway), gives each token its
  number of recursions r in 1..R, the argmax of z − offset·(j − 1)/(R − 1) over j = 1..R, in training as under
  `eval()`; g = softmax(z)[r], the probability of the depth chosen, multiplies recursions 2..r. **Balancing term:
  the budget loss** `aux = aux_weight · |mean r − budget|`, the mean over the batch's tokens of the realised depth
  with a straight-through gradient (one-hot forward, softmax backward: acm.py's L1 form).
- `"none"`: every token runs all R recursions, no router: the plain recursive model, the baseline of equal
  parameters.

**Budget.** `self.mean_depth`, the mean number of recursions a token runs, in [1, R]: "token": the option `budget`
(default (1 + R)/2). "expert": set by the capacity, 1 + c + ... + c^(R−1) (the share of tokens running recursion r is
c^(r−1)). "none": R. The option `budget` is refused but under "token", `capacity` but under "expert". The routers'
FLOPs are outside it. **The stack's depth, `layers`** (0 = all of the backbone's L layers): a stack of fewer blocks
repeated is how Mixture-of-Recursions spends the FLOPs of a dense model of fewer layers with the parameters of
fewer still; `self.budget`, the arena's `target`, is the FFN FLOPs over the backbone's dense BIG model's,
depth · layers / L (at `layers=4` of 8 and R = 2 with capacity 1/3: 4/3 · 4/8 = 0.667). `calibrate(windows)` sets
`offset` (a persistent buffer, saved) by bisection so that the realised mean recursions under `eval()` on the
(training) windows equals `self.mean_depth`: at R = 2 under "expert", the share of tokens running recursion 2 equals the
capacity. Since the decisions depend on the state, and every recursion's state on the decisions before it, the
realised depth is monotone in `offset` exactly under "token" (one decision after recursion 1) and nearly under
"expert" at R > 2.

**Recursion-wise KV caching** (the paper's, not its recursive KV sharing): each (recursion, block) pair has keys
and values of its own; only the tokens that run recursion r write there, and attention at recursion r reads only
those (RoPE at their true positions). The readable reference computes every block on *every* token, with an
attention mask that removes the tokens that do not run recursion r as keys, and keeps their residual stream
unchanged (`torch.where`): it computes more than it counts. A query always sees itself, so no mask row is empty; a
stopped token's own row is computed and thrown away. The cache is mod.py's `MoDCache`: `kv` over the R·L
(recursion, block) pairs, layer r·L + l, and `valid` (R, B, T_max), which cached tokens ran recursion r, so that
decoding token by token attends to the same keys as one full forward and gives the same logits under the same
decisions. Top-k without a cache (training under "expert", and `routing_eval="topk"`) takes the gathered path
instead, `recursion_gathered`: each sequence's k chosen tokens gathered in order, the stack run on them alone
(causal among themselves, RoPE at their own positions), scaled and scattered back; it equals the reference and
costs what it counts (tests/methods/test_mor.py).

**FLOPs per token** (routing/cost.py's convention, 2 per weight; `out.flops`, under the decisions taken):
- each (recursion, block) the token runs: attention projections + scores over the c keys it attends (the tokens at
  positions <= p that ran this recursion, itself included; at recursion 1, p + 1) + BIG's FFN 6·d·d_big; a
  recursion the token does not run costs nothing;
- routers: "token" 2·d·R for every token; "expert" 2·d at each recursion r >= 2 whose score the token computed,
  i.e. after each recursion r − 1 it ran (a stopped token computes no more scores); "none" 0;
- the head 2·d·V once.
Scores cost 2·2·d·c at c keys: cost.py's attention is affine in its mean context, so its tables at lengths 1 and 3
give the cost at any c (the convention of methods/dense.py and mod.py). A router's bias is elementwise and not
counted. The arena's `ffn_share` charges the attention of recursions 2..R as FFN FLOPs, so it reads above the
budget; compare `compute`.

`out.stats`: `recursions` (the mean per token under the rule applied), and in training under "expert" `bce` and
`agreement` (the predictor's decisions against top-k's, over the active tokens).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from duollm.errors import DuoError
from duollm.methods.base import Entrant, MethodOutput, bisect
from duollm.methods.mod import MoDBlock, MoDCache
from duollm.model.transformer import DuoConfig, KVCache, add_trunk, init_weights
from duollm.routing.route import Choice

ROUTING = ("expert", "token", "none")  # expert-choice, token-choice, every token takes every recursion
ROUTING_EVAL = ("causal", "topk")  # evaluation rules: causal (realisable) or expert-choice's top-k over the window (not)


class Trace(NamedTuple):
    """The trunk's result: the final residual stream and each token's recursions."""

    x: Tensor  # (B, T, C) before the final norm
    run: Tensor  # (B, T, R) bool: the token ran recursion r (recursion 1 always; nested: r+1 only after r)
    z: Tensor  # router logits fp32: "token" (B, T, R) over depths 1..R; "expert" (B, T, R-1) at r = 2..R; "none" (B, T, 0)
    keys: Tensor  # (B, T, R) int64: keys the token attended at each block of recursion r (itself included), 0 where not run


class MoR(Entrant):
    """Mixture-of-Recursions on a shared stack of L dense BIG blocks (module docstring).

    Options: `recursions` R, `routing` ("expert", "token" or "none"), `budget` the target mean recursions ("token"
    only; None = (1 + R)/2), `capacity` the share of active tokens that continue at each recursion ("expert" only;
    None = 0.5), `aux_weight` the weight of the budget loss ("token") or the predictor's BCE ("expert"),
    `routing_eval` the evaluation rule ("causal", or "topk" for "expert")."""

    method = "mor"
    eval_options = ("routing_eval",)  # training takes top-k under either rule

    def __init__(
        self,
        cfg: DuoConfig,
        recursions: int = 2,
        routing: str = "expert",
        budget: float | None = None,
        capacity: float | None = None,
        aux_weight: float = 1.0,
        routing_eval: str = "causal",
        layers: int = 0,
    ):
        super().__init__(
            cfg,
            recursions=recursions,
            routing=routing,
            budget=budget,
            capacity=capacity,
            aux_weight=aux_weight,
            routing_eval=routing_eval,
            layers=layers,
        )
        if not isinstance(layers, int) or not 0 <= layers <= cfg.n_layer:
            raise DuoError(f"mor: layers is the shared stack's depth in 1..{cfg.n_layer} (0 = all of them), got {layers!r}")
        self.stack_cfg = replace(cfg, n_layer=layers or cfg.n_layer)  # the shared stack's config: L blocks of parameters
        cfg = self.stack_cfg
        if not isinstance(recursions, int) or recursions < 1:
            raise DuoError(f"mor: recursions must be a positive integer, got {recursions!r}")
        if routing not in ROUTING:
            raise DuoError(f"mor: routing must be one of {', '.join(ROUTING)}, got {routing!r}")
        if routing != "none" and recursions < 2:
            raise DuoError(f"mor: routing {routing!r} needs recursions >= 2, got {recursions}")
        if budget is not None and (routing != "token" or not 1 <= budget <= recursions):
            raise DuoError(f"mor: budget (routing 'token' only) is the mean recursions in [1, {recursions}], got {budget} ({routing!r})")
        if capacity is not None and (routing != "expert" or not 0 < capacity <= 1):
            raise DuoError(f"mor: capacity (routing 'expert' only) is a share of tokens in (0, 1], got {capacity} ({routing!r})")
        if not aux_weight >= 0:
            raise DuoError(f"mor: aux_weight must be >= 0, got {aux_weight}")
        if routing_eval not in ROUTING_EVAL or (routing_eval == "topk" and routing != "expert"):
            raise DuoError(f"mor: routing_eval must be 'causal', or 'topk' under routing 'expert', got {routing_eval!r} ({routing!r})")
        R = recursions
        self.recursions, self.routing, self.aux_weight, self.routing_eval = R, routing, float(aux_weight), routing_eval
        self.capacity = 0.5 if capacity is None else float(capacity)
        if routing == "expert":
            self.mean_depth = sum(self.capacity**r for r in range(R))  # mean recursions when each keeps a share c
        elif routing == "token":
            self.mean_depth = (1 + R) / 2 if budget is None else float(budget)
        else:
            self.mean_depth = float(R)  # every token runs every recursion
        self.budget = (
            self.mean_depth * self.stack_cfg.n_layer / self.cfg.n_layer
        )  # the arena's target: FFN FLOPs over the backbone's dense BIG
        add_trunk(self, cfg, (MoDBlock(cfg, routed=False) for _ in range(cfg.n_layer)))
        self.router = nn.Linear(cfg.d_model, R) if routing == "token" else None  # logits over depths 1..R
        self.routers = nn.ModuleList(nn.Linear(cfg.d_model, 1) for _ in range(R - 1)) if routing == "expert" else None
        self.register_buffer("offset", torch.zeros(()))  # the calibration offset (0-d), saved
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DuoLM's init: Normal(0, init_std) matrices, projections into the residual stream scaled down by
        sqrt(2 L); router biases 0 (at init about half the active tokens continue, or any depth is as likely)."""
        init_weights(self, self.stack_cfg)

    @property
    def decodes(self) -> bool:
        return self.routing_eval != "topk"

    def new_cache(self, batch: int, max_len: int) -> MoDCache:
        """Keys and values of the R·L (recursion, block) pairs, and which cached tokens ran each recursion."""
        p, R = self.embed.weight, self.recursions
        kv = KVCache.empty(replace(self.stack_cfg, n_layer=R * self.stack_cfg.n_layer), batch, max_len, device=p.device, dtype=p.dtype)
        return MoDCache(kv, torch.zeros(R, batch, max_len, dtype=torch.bool, device=p.device))

    def depth(self, z: Tensor) -> Tensor:
        """Token-choice: the recursions (B, T) int64 in 1..R from the router's logits z (B, T, R); depth j loses
        offset · (j − 1)/(R − 1), ties go to the fewest."""
        steps = torch.arange(self.recursions, device=z.device) / (self.recursions - 1)  # (R,)
        return (z - self.offset * steps).argmax(-1) + 1

    def choose(self, z: Tensor, active: Tensor, rule: str, k: int) -> Tensor:
        """Expert-choice: which of the `active` (B, T) bool tokens continue, from their logits z (B, T): (B, T) bool.
        "topk": each sequence's k largest logits among its active tokens; "causal": z > offset, each on its own."""
        if rule == "causal":
            return active & (z > self.offset)
        top = z.masked_fill(~active, -float("inf")).topk(k, dim=1).indices  # (B, k)
        return torch.zeros_like(active).scatter_(1, top, True)  # (B, T)

    def stack(self, x: Tensor, r: int, cos: Tensor, sin: Tensor, cache: MoDCache | None, mask: Tensor | None) -> Tensor:
        """One pass of the L shared blocks over x (B, T, C) at recursion r (0-based), its keys and values in the
        cache's layers r·L..r·L + L − 1; `mask` (B, 1, T, pos+T) bool, or None: causal over every earlier token."""
        L = self.stack_cfg.n_layer
        for l, block in enumerate(self.blocks):
            x = block(x, cos, sin, None if cache is None else cache.kv.layer(r * L + l), mask)
        return x

    def route(self, x: Tensor, r: int, run: Tensor, z: Tensor | None, rule: str, k: int) -> tuple[Tensor, Tensor | None, Tensor]:
        """Who runs recursion r >= 1 (0-based) and with what weight, from the state x (B, T, C) and `run` (B, T), who
        ran recursion r − 1: (run (B, T) bool, weight (B, T) fp32 or None = 1 for everyone, logits). `z` is
        token-choice's logits (B, T, R) once computed (after recursion 1), `k` expert-choice's top-k size."""
        if self.routing == "none":
            return run, None, z
        if self.routing == "token":
            z = self.router(self.blocks[0].attn_norm(x)).float() if z is None else z  # (B, T, R)
            depth = self.depth(z)  # (B, T)
            return depth > r, z.softmax(-1).gather(-1, depth[..., None] - 1).squeeze(-1), z
        z = self.routers[r - 1](self.blocks[0].attn_norm(x)).squeeze(-1).float()  # (B, T)
        return self.choose(z, run, rule, k), torch.sigmoid(z), z

    def trunk(self, ids: Tensor, rule: str, cache: MoDCache | None = None, reference: bool = False) -> Trace:
        """Embedding and recursions over `ids` (B, T) int64 under `rule`, continuing `cache` if given (it advances
        by T). Top-k without a cache takes the gathered path (`recursion_gathered`); `reference=True`, the causal
        rule and decoding take the masked reference. Both give the same result (tests/methods/test_mor.py)."""
        B, T = ids.shape
        pos = 0 if cache is None else cache.pos
        if pos + T > self.stack_cfg.max_seq_len:
            raise ValueError(f"sequence length {pos + T} exceeds max_seq_len {self.stack_cfg.max_seq_len}")
        if cache is not None and rule == "topk":
            raise DuoError("mor: top-k routing is not causal and cannot decode through a cache; use routing_eval='causal'")
        gathered = rule == "topk" and not reference
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, hs/2)
        causal = torch.ones(T, pos + T, dtype=torch.bool, device=ids.device).tril(pos)  # (T, pos+T): i sees 0..pos+i
        me = torch.arange(T, device=ids.device)  # (T,) query i's own slot is pos + i
        x = self.embed(ids)  # (B, T, C)
        run, z, k = torch.ones(B, T, dtype=torch.bool, device=ids.device), None, T
        runs, logits, keys = [], [], []
        for r in range(self.recursions):
            weight = None  # recursion 1: every token, unweighted
            if r:
                k = max(1, round(self.capacity * k))  # expert-choice's top-k size at recursion r
                run, weight, z = self.route(x, r, run, z, rule, k)
                if self.routing == "expert":
                    logits.append(z)
            seen = run if cache is None else torch.cat([cache.valid[r, :, :pos], run], dim=1)  # (B, pos+T): keys here
            if weight is None:
                x = self.stack(x, r, cos, sin, cache, None)
            elif gathered:
                x = recursion_gathered(self, x, run, weight, r, k)
            else:
                mask = causal & seen[:, None, :]  # (B, T, pos+T): earlier tokens that ran this recursion
                mask[:, me, pos + me] = True  # every query sees itself: no empty row (a stopped query's row is discarded)
                h = self.stack(x, r, cos, sin, cache, mask[:, None])  # (B, T, C)
                x = torch.where(run[..., None], x + weight[..., None].to(h.dtype) * (h - x), x)  # (B, T, C)
            if cache is not None:
                cache.valid[r, :, pos : pos + T] = run
            runs.append(run)
            keys.append(seen.long().cumsum(1)[:, pos:] * run)  # (B, T): keys attended, itself included; 0 if not run
        if cache is not None:
            cache.kv.pos += T
        if self.routing == "expert":
            z = torch.stack(logits, -1)  # (B, T, R-1)
        elif self.routing == "none":
            z = x.new_zeros(B, T, 0, dtype=torch.float32)  # no router
        return Trace(x, torch.stack(runs, -1), z, torch.stack(keys, -1))

    def token_flops(self, run: Tensor, keys: Tensor) -> Tensor:
        """Forward FLOPs (B, T) float64 of tokens that ran the recursions as `run` (B, T, R) says, attending `keys`
        (B, T, R) keys at each block there (module docstring). The table's numbers stay host floats."""
        c = self.stack_cfg
        one, three = c.cost(1), c.cost(3)  # attention at 1 key, and at 2 keys (the mean context of 3 tokens)
        stack = float(one.attn.sum() + one.ffn[:, Choice.BIG].sum())  # the L blocks at one key
        step = float((three.attn - one.attn).sum())  # one more key at each of the L blocks: L·2·2·d
        run, keys = run.double(), keys.double()  # (B, T, R) each
        flops = one.head + (run * (stack + (keys - 1) * step)).sum(-1)  # (B, T)
        if self.routing == "token":
            return flops + 2 * c.d_model * self.recursions  # the d × R router, every token
        if self.routing == "expert":
            return flops + 2 * c.d_model * run[..., :-1].sum(-1)  # a d × 1 router after each recursion run but the last
        return flops

    def losses(self, run: Tensor, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training's auxiliary loss and its stats from the trace's `run` (B, T, R) and logits `z`: the budget loss
        ("token"), the predictor's BCE on the top-k decisions of the active tokens ("expert"), nothing ("none")."""
        if self.routing == "token":
            p = z.softmax(-1)  # (B, T, R)
            hard = F.one_hot(run.sum(-1) - 1, self.recursions).to(p.dtype)  # (B, T, R): the depth taken
            depths = torch.arange(1, self.recursions + 1, device=z.device, dtype=p.dtype)  # (R,)
            realised = ((hard + p - p.detach()) * depths).sum(-1).mean()  # mean depth, straight-through gradient
            return self.aux_weight * (realised - self.mean_depth).abs(), {}
        if self.routing == "expert":
            active, chosen = run[..., :-1], run[..., 1:]  # (B, T, R-1) each: candidates at r = 2..R, and top-k's pick
            n = active.sum()
            bce = (F.binary_cross_entropy_with_logits(z, chosen.float(), reduction="none") * active).sum() / n
            agree = (((z > self.offset) == chosen) & active).sum() / n  # the predictor against top-k, for logs
            return self.aux_weight * bce, {"bce": bce.detach(), "agreement": agree.float()}
        return torch.zeros((), device=run.device), {}

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache: MoDCache | None = None) -> MethodOutput:
        """`ids` (B, T) int64, `targets` (B, T) or None (ignore_index -1), `cache` from `new_cache` or None."""
        rule = "topk" if self.training and self.routing == "expert" else self.routing_eval
        x, run, z, keys = self.trunk(ids, rule, cache)
        logits = F.linear(self.norm(x), self.embed.weight if self.lm_head is None else self.lm_head.weight)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        aux, stats = self.losses(run, z) if self.training else (torch.zeros((), device=ids.device), {})
        stats = {"recursions": run.sum(-1).float().mean()} | stats  # mean recursions per token under the rule applied
        stats = dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))  # one host sync
        return MethodOutput(logits=logits, loss=loss, aux=aux, flops=self.token_flops(run, keys), stats=stats)

    @torch.no_grad()
    def realised(self, windows: Tensor, batch_size: int = 16) -> float:
        """Mean recursions per token under the causal rule over `windows` (W, T) int64 (the train/eval mode is kept)."""
        was_training = self.training
        self.eval()
        total = sum(self.trunk(w, "causal").run.double().sum().item() for w in windows.split(batch_size))
        self.train(was_training)
        return total / windows.numel()

    @torch.no_grad()
    def calibrate(self, windows: Tensor, batch_size: int = 16, iters: int = 30) -> float:
        """Set `offset` by bisection so that the mean recursions under `eval()` over held-out `windows` (W, T) int64
        is `budget`; returns the mean reached. Under "none" nothing is set: every token runs R."""
        windows = windows.to(self.offset.device)
        if self.routing == "none":
            return self.realised(windows, batch_size)

        def at(t: float) -> float:
            self.offset.fill_(t)
            return self.realised(windows, batch_size)

        return bisect(at, self.mean_depth, iters)[1]  # the mean falls as the offset rises


def recursion_gathered(model: MoR, x: Tensor, run: Tensor, weight: Tensor, r: int, k: int) -> Tensor:
    """Recursion r (0-based) on the chosen tokens only, the paper's computation: gather → stack → scale → scatter.

    `x` (B, T, C) the residual stream, `run` (B, T) bool with the same number `k` of chosen tokens in every sequence
    (as top-k gives), `weight` (B, T) the router's. The k tokens attend causally among themselves at their own
    positions (no cache). Returns x (B, T, C), the others unchanged."""
    B, T, C = x.shape
    idx = run.float().topk(k, dim=1).indices.sort(dim=1).values  # (B, k) ascending positions of the chosen tokens
    at = idx[..., None].expand(-1, -1, C)  # (B, k, C)
    xs = x.gather(1, at)  # (B, k, C) the chosen tokens, in order
    cos, sin = model.rope_cos[idx].unsqueeze(1), model.rope_sin[idx].unsqueeze(1)  # (B, 1, k, hs/2): own positions
    h = model.stack(xs, r, cos, sin, None, None)  # (B, k, C): causal among the chosen tokens
    w = weight.gather(1, idx)[..., None].to(h.dtype)  # (B, k, 1)
    return x.scatter(1, at, xs + w * (h - xs))  # (B, T, C)

"""Mixture-of-Depths: the `mod` entrant (Raposo et al. 2024, "Mixture-of-Depths: Dynamically allocating compute in
transformer-based language models", arXiv:2404.02258; issue 21, entrant 3).

A dense Llama decoder (model/transformer.py's `Attention`, `KVCache` and RoPE tables, model/ffn.py's `SwiGLU` at
BIG's width) in which every `every`-th block is *routed* (blocks every-1, 2·every-1, ...; `every=2`: every other
block, the paper's best setting). In a routed block a router, a linear map d → 1 with a bias over the block's
attention-normalised input, scores each token; the chosen tokens run the whole block (attention and FFN) and the
others pass through unchanged:

    x_out = x + sigmoid(z) · f(x)      a chosen token;  f(x) = the block's output, attention then FFN
    x_out = x                          a token that skips the block

The router's weight multiplies the block's output, which is how the router gets a gradient from the language-model
loss. It is sigmoid(z), not the raw logit z of the paper's eq. 1: it stays in (0, 1) and is the very probability the
causal predictor thresholds (below).

**Choosing the tokens.**
- Training (`model.train()`): top-k per sequence and routed block, `k = max(1, round(capacity · T))` of the T
  tokens with the largest logits (the paper's expert-choice rule at capacity c, 12.5% by default). Not causal: the
  k-th largest logit depends on later tokens.
- Evaluation and decoding (`model.eval()`, `routing="predictor"`, the default): the causal predictor. **Choice:
  the paper's auxiliary BCE loss on the router's own logits** (its §3.5, first method), not a separate MLP: in
  training `aux = aux_weight · BCE(z, top-k decisions)`, averaged over tokens and routed blocks, so the logit learns
  to sit above 0 exactly where top-k would pick the token. Under `eval()` a token runs a routed block when
  `z > threshold`, i.e. sigmoid(z) > 0.5 while `threshold` is 0. A token's logit depends on its own state only,
  and that on tokens <= t, so this rule is causal. `calibrate(windows)` can move `threshold` (a persistent buffer)
  by bisection so that the realised capacity on held-out windows equals `capacity`; it is 0 until called.
- `routing="topk"` evaluates with the training rule over each forward's window: not realisable (a decoder does not
  know later tokens), reported beside the predictor's perplexity only. It refuses a cache. `set_routing` switches
  a trained model between the two rules.

**Attention in a routed block.** Only chosen tokens take part, as queries and as keys: a token that skips a block
writes no keys or values there, so later tokens' attention at that block sees only the tokens that ran it (RoPE at
their true positions). The readable reference below computes the block on *every* token, with an attention mask
that removes skipped tokens as keys, and keeps a skipped token's residual stream unchanged (`torch.where`): it
computes more than it counts. A query always sees at least itself, so no mask row is empty (SDPA would return NaN
there); a skipped token's own row is computed and thrown away. A forward without a cache (training, evaluation
under either rule) takes the paper's gathered path instead, `routed_gathered`: the chosen tokens of each sequence
gathered in order, the block run on them alone (causal among themselves, RoPE at their own positions), scaled and
scattered back; it equals the reference, forward and backward, and costs what it counts. Under the predictor the
sequences of a batch choose different numbers of tokens, so each is padded to the batch's largest count with the
padding masked out as keys (one host read per routed block, for that count). The KV cache
(`MoDCache`) holds, per routed block, which cached tokens ran it, so that decoding token by token attends to the
same keys as one full forward and gives the same logits under the same decisions.

**FLOPs per token** (routing/cost.py's convention, 2 per weight; `out.flops`, under the decisions taken):
- a dense block: attention projections + scores over the token's p + 1 keys (position p), + BIG's FFN 6·d·d_big;
- a routed block that the token runs: its router 2·d, attention projections + scores over the c keys it actually
  attends (the tokens at positions <= p that ran this block, itself included), + 6·d·d_big;
- a routed block that the token skips: its router 2·d only (no projections: it writes no keys or values);
- the head 2·d·V once.
Scores cost 2·2·d·c at c keys: cost.py's attention is affine in its mean context, so its tables at lengths 1 and 3
give the cost at any c (the same convention as methods/dense.py: over a dense window from position 0, the mean is
the table's). A router's bias is elementwise and not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from duollm.errors import DuoError
from duollm.methods.base import Entrant, MethodOutput, bisect
from duollm.model.ffn import SwiGLU
from duollm.model.transformer import Attention, DuoConfig, KVCache, add_trunk, init_weights
from duollm.routing.route import Choice

ROUTING = ("predictor", "topk")  # evaluation rules: the causal predictor (realisable) or top-k over the window (not)


class MoDBlock(nn.Module):
    """A dense block, attention then BIG's SwiGLU, and its router (Linear(d, 1) with a bias) when it is routed."""

    def __init__(self, cfg: DuoConfig, routed: bool):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)  # the router reads the state attention reads
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.d_big)
        self.router = nn.Linear(cfg.d_model, 1) if routed else None

    def scores(self, x: Tensor) -> Tensor:
        """Router logits z (B, T) fp32 from the residual stream x (B, T, C)."""
        return self.router(self.attn_norm(x)).squeeze(-1).float()  # (B, T)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv=None, mask=None, run=None, weight=None) -> Tensor:
        """x (B, T, C) → (B, T, C). `kv`: this block's cache; `mask` (B, 1, T, pos+T) bool: the keys each query
        sees. A routed block gets `run` (B, T) bool and `weight` (B, T): a running token adds weight · f(x), a
        skipped one passes unchanged. A dense block (run None): the residual stream in two lines."""
        if run is None:
            x = x + self.attn(self.attn_norm(x), cos, sin, kv, mask)  # (B, T, C)
            return x + self.ffn(self.ffn_norm(x))  # (B, T, C)
        h = self.attn(self.attn_norm(x), cos, sin, kv, mask)  # (B, T, C): over the keys of tokens that ran
        h = h + self.ffn(self.ffn_norm(x + h))  # (B, T, C): the block's whole output f(x)
        return torch.where(run[..., None], x + weight[..., None].to(h.dtype) * h, x)  # (B, T, C)


def routed_gathered(block: MoDBlock, x: Tensor, z: Tensor, run: Tensor, cos: Tensor, sin: Tensor, k: int | None = None) -> Tensor:
    """A routed block on the chosen tokens only, the paper's computation: gather → block → scale → scatter back.

    `x` (B, T, C) the residual stream, `z` (B, T) router logits, `run` (B, T) bool the chosen tokens, `cos`/`sin`
    (T, hs/2) RoPE tables of positions 0..T-1. The chosen tokens of a sequence are gathered in order and attend
    causally among themselves at their own positions. Sequences may choose different numbers of tokens (the
    predictor): each is padded to the largest count, read from `run` (one host read), and the padding is masked out
    as keys and left unchanged. `k` given (top-k: exactly k in every sequence): no padding, no read. Returns x."""
    B, T, C = x.shape
    same_count = k is not None
    order = torch.sort((~run).to(torch.uint8), dim=1, stable=True).indices  # (B, T): the chosen first, in order
    k = int(run.sum(1).max()) if k is None else k  # the gather's width
    if k == 0:
        return x
    idx = order[:, :k]  # (B, k) positions: the chosen tokens of each sequence, then padding
    at = idx[..., None].expand(-1, -1, C)  # (B, k, C)
    xs = x.gather(1, at)  # (B, k, C)
    cs, sn = cos[idx].unsqueeze(1), sin[idx].unsqueeze(1)  # (B, 1, k, hs/2): each token's own position
    mask = None
    if not same_count:  # padding slots are no key; every query sees itself, so no row is empty
        valid = run.gather(1, idx)  # (B, k) bool
        mask = torch.ones(k, k, dtype=torch.bool, device=x.device).tril() & valid[:, None, :]  # (B, k, k)
        mask = (mask | torch.eye(k, dtype=torch.bool, device=x.device))[:, None]  # (B, 1, k, k)
    h = block.attn(block.attn_norm(xs), cs, sn, None, mask)  # (B, k, C): causal among the chosen tokens
    h = h + block.ffn(block.ffn_norm(xs + h))  # (B, k, C): the block's whole output f(x)
    w = torch.sigmoid(z.gather(1, idx))  # (B, k) the router's weight
    new = xs + w[..., None].to(h.dtype) * h  # (B, k, C)
    if not same_count:
        new = torch.where(valid[..., None], new, xs)  # padding slots keep their token's state
    return x.scatter(1, at, new)  # (B, T, C): the others pass unchanged


@dataclass
class MoDCache:
    """Keys and values of every block (`kv`, model/transformer.py's KVCache) and, per routed block, which cached
    tokens ran it: a skipped token's slot holds no key, and later queries must not see it."""

    kv: KVCache  # (L, B, nkv, T_max, hs) keys and values; kv.pos tokens filled
    valid: Tensor  # (R, B, T_max) bool: token t ran routed block r (wrote its keys and values there)

    @property
    def pos(self) -> int:
        return int(self.kv.pos)


class Trace(NamedTuple):
    """The trunk's result: the final residual stream and each token's decisions at the routed blocks."""

    x: Tensor  # (B, T, C) before the final norm
    run: Tensor  # (B, T, R) bool: the token ran routed block r
    logits: Tensor  # (B, T, R) fp32: router logits z
    keys: Tensor  # (B, T, R) int64: keys the token attended at routed block r (itself included), 0 where skipped


class MoD(Entrant):
    """Mixture-of-Depths on a dense BIG decoder (module docstring).

    Options: `capacity` the share of tokens that run a routed block (top-k in training, the predictor's target),
    `every` routes blocks every-1, 2·every-1, ... (1 = every block), `routing` the evaluation rule ("predictor" or
    "topk"), `aux_weight` the weight of the predictor's BCE loss."""

    method = "mod"
    eval_options = ("routing",)  # training takes top-k under either rule

    def __init__(self, cfg: DuoConfig, capacity: float = 0.125, every: int = 2, routing: str = "predictor", aux_weight: float = 1.0):
        super().__init__(cfg, capacity=capacity, every=every, routing=routing, aux_weight=aux_weight)
        if not 0.0 < capacity <= 1.0:
            raise DuoError(f"mod: capacity is a share of tokens in (0, 1], got {capacity}")
        if not isinstance(every, int) or not 1 <= every <= cfg.n_layer:
            raise DuoError(f"mod: every must be an integer in 1..n_layer ({cfg.n_layer}), got {every!r}")
        if routing not in ROUTING:
            raise DuoError(f"mod: routing must be one of {', '.join(ROUTING)}, got {routing!r}")
        if not aux_weight >= 0:
            raise DuoError(f"mod: aux_weight must be >= 0, got {aux_weight}")
        self.capacity, self.every, self.routing, self.aux_weight = float(capacity), every, routing, float(aux_weight)
        self.routed = tuple(l for l in range(cfg.n_layer) if l % every == every - 1)  # routed block indices
        L, R = cfg.n_layer, len(self.routed)
        self.budget = (L - R + capacity * R) / L  # target FFN FLOPs over the dense model's (attention saves too)
        add_trunk(self, cfg, (MoDBlock(cfg, l in self.routed) for l in range(L)))
        self.register_buffer("threshold", torch.zeros(()))  # the predictor's logit threshold (0-d), saved
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DuoLM's init: Normal(0, init_std) matrices, projections into the residual stream scaled down by
        sqrt(2 L); router biases 0 (sigmoid 0.5: about half the tokens pass the predictor at init)."""
        init_weights(self, self.cfg)

    @property
    def decodes(self) -> bool:
        return self.routing != "topk"

    def set_routing(self, routing: str) -> None:
        """Switch the evaluation rule ("predictor" or "topk"); `options` follow, so a saved model keeps it."""
        if routing not in ROUTING:
            raise DuoError(f"mod: routing must be one of {', '.join(ROUTING)}, got {routing!r}")
        self.routing = self.options["routing"] = routing

    def new_cache(self, batch: int, max_len: int) -> MoDCache:
        p = self.embed.weight
        kv = KVCache.empty(self.cfg, batch, max_len, device=p.device, dtype=p.dtype)
        return MoDCache(kv, torch.zeros(len(self.routed), batch, max_len, dtype=torch.bool, device=p.device))

    def top(self, z: Tensor) -> Tensor:
        """The top-k rule: the positions (B, k) int64, ascending, of each sequence's k largest logits z (B, T),
        k = max(1, round(capacity · T))."""
        return z.topk(self.top_k(z.shape[1]), dim=1).indices.sort(dim=1).values  # (B, k)

    def top_k(self, T: int) -> int:
        """Top-k's count in a window of T tokens: max(1, round(capacity · T))."""
        return max(1, round(self.capacity * T))

    def decide(self, z: Tensor, rule: str) -> Tensor:
        """Which tokens run a routed block, from its logits z (B, T): (B, T) bool. "topk": `top`; "predictor":
        z > threshold, each token on its own."""
        if rule == "predictor":
            return z > self.threshold
        return torch.zeros_like(z, dtype=torch.bool).scatter_(1, self.top(z), True)  # (B, T)

    def trunk(self, ids: Tensor, rule: str, cache: MoDCache | None = None, reference: bool = False) -> Trace:
        """Embedding and blocks over `ids` (B, T) int64 under `rule`, continuing `cache` if given (it advances by T).

        Without a cache, either rule takes the gathered path (`routed_gathered`: a routed block runs on its chosen
        tokens only, the paper's computation); `reference=True` and decoding take the masked reference
        (`MoDBlock.forward` on every token). Both give the same result (tests/methods/test_mod.py)."""
        B, T = ids.shape
        pos = 0 if cache is None else cache.pos
        if pos + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {pos + T} exceeds max_seq_len {self.cfg.max_seq_len}")
        if cache is not None and rule == "topk":
            raise DuoError("mod: top-k routing is not causal and cannot decode through a cache; use routing='predictor'")
        gathered = cache is None and not reference  # a window from position 0: the gathered path
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, hs/2)
        causal = torch.ones(T, pos + T, dtype=torch.bool, device=ids.device).tril(pos)  # (T, pos+T): i sees 0..pos+i
        me = torch.arange(T, device=ids.device)  # (T,) query i's own slot is pos + i
        x = self.embed(ids)  # (B, T, C)
        runs, logits, keys = [], [], []
        for l, block in enumerate(self.blocks):
            kv = None if cache is None else cache.kv.layer(l)
            if block.router is None:  # dense: every token, causal attention over every earlier token
                x = block(x, cos, sin, kv)
                continue
            r = len(runs)  # index among the routed blocks
            z = block.scores(x)  # (B, T) fp32
            run = self.decide(z, rule)  # (B, T) bool
            if gathered:
                k = self.top_k(T) if rule == "topk" else None  # top-k's count, known on the host
                x = routed_gathered(block, x, z, run, self.rope_cos[:T], self.rope_sin[:T], k)
            seen = run if cache is None else torch.cat([cache.valid[r, :, :pos], run], dim=1)  # (B, pos+T): keys here
            if not gathered:
                mask = causal & seen[:, None, :]  # (B, T, pos+T): earlier tokens that ran this block
                mask[:, me, pos + me] = True  # every query sees itself: no empty row (a skipped query's row is discarded)
                x = block(x, cos, sin, kv, mask[:, None], run, torch.sigmoid(z))
            if cache is not None:
                cache.valid[r, :, pos : pos + T] = run
            runs.append(run)
            logits.append(z)
            keys.append(seen.long().cumsum(1)[:, pos:] * run)  # (B, T): keys attended, itself included; 0 if skipped
        if cache is not None:
            cache.kv.pos += T
        return Trace(x, torch.stack(runs, -1), torch.stack(logits, -1), torch.stack(keys, -1))

    def token_flops(self, run: Tensor, keys: Tensor, pos: int = 0) -> Tensor:
        """Forward FLOPs (B, T) float64 of tokens at positions pos.. that ran the routed blocks as `run` (B, T, R)
        says, attending `keys` (B, T, R) keys there (module docstring). The table's numbers stay host floats, so
        nothing is copied to the device or read back from it (no synchronisation in a training step)."""
        c, (B, T, R) = self.cfg, run.shape
        one, three = c.cost(1), c.cost(3)  # attention at 1 key, and at 2 keys (the mean context of 3 tokens)
        attn, step = one.attn.tolist(), (three.attn - one.attn).tolist()  # per layer; step: one more key, 2·2·d
        big = one.ffn[:, Choice.BIG].tolist()  # per layer: BIG's FFN
        run, keys = run.double(), keys.double()  # (B, T, R) each
        p = torch.arange(pos, pos + T, dtype=torch.float64, device=run.device)  # (T,) a dense block reads p + 1 keys
        router = 2 * c.d_model  # a d × 1 matrix per routed block, 2 FLOPs per weight; paid whether the token runs or not
        flops = torch.full((B, T), one.head + router * R, dtype=torch.float64, device=run.device)  # (B, T)
        for l in range(c.n_layer):
            if l in self.routed:  # only if the token ran it, over the keys it attended
                r = self.routed.index(l)
                flops = flops + run[..., r] * (attn[l] + big[l] + (keys[..., r] - 1) * step[l])  # (B, T)
            else:
                flops = flops + (attn[l] + big[l] + p * step[l])  # (B, T) + (T,)
        return flops

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache: MoDCache | None = None) -> MethodOutput:
        """`ids` (B, T) int64, `targets` (B, T) or None (ignore_index -1), `cache` from `new_cache` or None."""
        pos = 0 if cache is None else cache.pos
        rule = "topk" if self.training else self.routing
        x, run, z, keys = self.trunk(ids, rule, cache)
        logits = F.linear(self.norm(x), self.embed.weight if self.lm_head is None else self.lm_head.weight)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        aux = torch.zeros((), device=ids.device)
        stats = {"capacity": run.float().mean()}  # share of routed-block slots taken under the rule applied
        if self.training:  # the predictor learns the top-k decisions; its own capacity and agreement for logs
            bce = F.binary_cross_entropy_with_logits(z, run.float())  # over (B, T, R)
            aux = self.aux_weight * bce
            pred = z > self.threshold  # (B, T, R)
            stats |= {"bce": bce.detach(), "predictor_capacity": pred.float().mean(), "agreement": (pred == run).float().mean()}
        stats = dict(zip(stats, torch.stack(list(stats.values())).tolist(), strict=True))  # one host sync, not one per value
        return MethodOutput(logits=logits, loss=loss, aux=aux, flops=self.token_flops(run, keys, pos), stats=stats)

    @torch.no_grad()
    def realised_capacity(self, windows: Tensor, batch_size: int = 16) -> float:
        """Share of routed-block slots the predictor takes under `eval()` over `windows` (W, T) int64."""
        was_training = self.training
        self.eval()
        taken = sum(self.trunk(w, "predictor").run.double().sum().item() for w in windows.split(batch_size))
        self.train(was_training)
        return taken / (windows.numel() * len(self.routed))

    @torch.no_grad()
    def calibrate(self, windows: Tensor, batch_size: int = 16, iters: int = 30) -> float:
        """Set `threshold` by bisection so that the predictor's realised capacity over held-out `windows` (W, T)
        int64 is `capacity`; returns the capacity reached. A higher threshold lets fewer tokens through at every
        routed block (with several routed blocks the later ones' logits move too, so it is monotone only nearly)."""
        windows = windows.to(self.threshold.device)

        def at(t: float) -> float:
            self.threshold.fill_(t)
            return self.realised_capacity(windows, batch_size)

        return bisect(at, self.capacity, iters)[1]  # capacity falls as the threshold rises

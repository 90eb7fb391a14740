"""The Duo model: a Llama-style decoder with a big and a small FFN in every layer (docs/design.md §2).

Read top to bottom: config → RoPE helpers → attention → block → model. Pre-norm RMSNorm, rotary position
embeddings (Su et al. 2021), causal scaled-dot-product attention (optionally grouped-query), SwiGLU FFNs
without bias, input and output embeddings tied (or, with `tie_embeddings=False`, a separate output head, as most
Llama checkpoints have). Attention runs for every token in every layer; only the FFN is routed, through one
pre-FFN RMSNorm shared by both modules (docs/design.md §2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from duollm import kernels
from duollm.kernels import compiled
from duollm.kernels.available import compiling
from duollm.model.ffn import RoutedFFN
from duollm.routing.cost import CostTable, cost_table
from duollm.routing.route import Choice, check_route, checked_counts, host_counts


@dataclass
class DuoConfig:
    """Sizes of a Duo model. Defaults give a model that trains on a CPU in seconds."""

    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads
    n_kv_head: int = 4  # key/value heads (grouped-query attention when < n_head)
    d_model: int = 32  # residual stream width
    d_big: int = 128  # inner width of the big FFN module
    d_small: int = 8  # inner width of the small FFN module
    vocab_size: int = 64  # rows of the embedding and the output head (>= the tokenizer's vocabulary)
    max_seq_len: int = 64  # longest sequence (RoPE tables are built this long)
    rope_theta: float = 10000.0  # RoPE base
    norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_embeddings: bool = True  # the output head reads the input embedding; False: a separate `lm_head` weight
    init_std: float = 0.02  # normal init std; output projections get init_std / sqrt(2 * n_layer)
    kernel: Literal["auto", "reference", "sorted", "grouped", "masked", "fused", "decode"] = (
        "auto"  # per-token routed FFN: reference (model/ffn.py), sorted, grouped, masked, fused or decode (kernels/); auto: kernels.choose
    )
    small_view: bool = False  # SMALL owns no weights: it is BIG's first d_small inner neurons (model/ffn.py SmallView)

    def __post_init__(self):
        if self.d_model % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"d_model ({self.d_model}) must divide by n_head ({self.n_head}) and n_head by n_kv_head ({self.n_kv_head})")
        if (self.d_model // self.n_head) % 2:
            raise ValueError(f"head size d_model/n_head = {self.d_model // self.n_head} must be even for RoPE")
        if self.small_view and self.d_small > self.d_big:
            raise ValueError(f"small_view needs d_small ({self.d_small}) <= d_big ({self.d_big}): SMALL is BIG's first neurons")

    def cost(self, seq_len: int | None = None) -> CostTable:
        """The FLOP table of this model (routing/cost.py) at `seq_len` (default max_seq_len)."""
        T = self.max_seq_len if seq_len is None else seq_len
        return cost_table(self.n_layer, self.d_model, self.d_big, self.d_small, self.vocab_size, T, self.n_head, self.n_kv_head)


@dataclass
class DuoOutput:
    """What forward returns: logits, the mean next-token loss when targets were given, and the route used."""

    logits: Tensor  # (B, T, V)
    loss: Tensor | None  # scalar
    route: Tensor  # (L,) or (B, T, L) uint8, as applied


def rope_tables(T: int, hs: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin for rotary embeddings, each (T, hs/2)."""
    inv = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)  # (hs/2,)
    ang = torch.outer(torch.arange(T, dtype=torch.float32), inv)  # (T, hs/2)
    return ang.cos(), ang.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[..., :hs/2], x[..., hs/2:]) of x (B, nh, T, hs) by position (the Llama/HF layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)  # (B, nh, T, hs)
    return out.type_as(x)


rope = compiled.on_gpu(apply_rope)  # the same rotation, one fused kernel on a GPU (kernels/compiled.py)


class Slots(NamedTuple):
    """Where a step's tokens go in a static-shape cache (model/decode.py `Decoder`), made once per forward."""

    at: Tensor  # (T,) int64 positions of the new tokens
    mask: Tensor  # (T, T_max) bool: query i sees cache slots 0..at[i]


class Attention(nn.Module):
    """Causal multi-head (or grouped-query) self-attention with RoPE, through PyTorch SDPA."""

    def __init__(self, cfg: DuoConfig):
        super().__init__()
        self.nh, self.nkv, self.hs = cfg.n_head, cfg.n_kv_head, cfg.d_model // cfg.n_head
        self.q = nn.Linear(cfg.d_model, self.nh * self.hs, bias=False)
        self.k = nn.Linear(cfg.d_model, self.nkv * self.hs, bias=False)
        self.v = nn.Linear(cfg.d_model, self.nkv * self.hs, bias=False)
        self.o = nn.Linear(self.nh * self.hs, cfg.d_model, bias=False)
        self.fused: Tensor | None = None  # q's, k's and v's weights as one matrix, while model/fuse.py switches it on
        self.one_row = False  # one row through the matrix-vector kernels (kernels.linear), while model/fuse.py says so

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, kv: tuple[Tensor, Tensor, int] | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """`kv`: this layer's cache (k (B, nkv, T_max, hs), v, pos): the new keys and values are written at
        positions pos..pos+T-1 and the queries attend to everything up to there. With `Slots` in place of pos,
        they are written at `Slots.at` and the queries read the whole buffer under `Slots.mask`. `mask`
        (B, 1, T, pos+T) bool, from `padding`: where each query may look, in place of the causal rule."""
        B, T, C = x.shape
        if self.fused is not None and not torch.is_grad_enabled():  # one matmul for the three (inference: model/fuse.py)
            q, k, v = kernels.linear(x, self.fused, self.one_row).split([self.nh * self.hs, self.nkv * self.hs, self.nkv * self.hs], dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.nkv, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.nkv, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        given, mask, causal = mask, None, True
        if kv is not None and isinstance(kv[2], Slots):  # static shapes (a CUDA graph): positions on the device
            k_buf, v_buf, (at, mask) = kv
            k_buf.index_copy_(2, at, k), v_buf.index_copy_(2, at, v)
            k, v, causal = k_buf, v_buf, False  # the whole buffer; slots past a query's position are masked
        elif kv is not None and kv[2] > 0:  # tokens already in the cache come first
            k_buf, v_buf, pos = kv
            k_buf[:, :, pos : pos + T], v_buf[:, :, pos : pos + T] = k, v
            k, v = k_buf[:, :, : pos + T], v_buf[:, :, : pos + T]  # (B, nkv, pos+T, hs)
            causal = False
            if T > 1 and given is None:  # query i sees keys 0..pos+i (a padded batch brings its own mask)
                mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(pos)
        elif kv is not None:
            kv[0][:, :, :T], kv[1][:, :, :T] = k, v
        if given is not None:  # a padded batch: causal and no padding keys, made once per forward
            mask, causal = given, False
        gqa = {"enable_gqa": True} if self.nkv != self.nh else {}  # each key/value head serves nh/nkv query heads
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, **gqa)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)
        return kernels.linear(y, self.o.weight, one_row=True) if self.one_row else self.o(y)  # (B, T, C)


@dataclass
class KVCache:
    """Keys and values of every layer for B sequences of up to T_max tokens; `pos` tokens are filled.

    Attention runs for every token at every layer (only FFNs are routed), so the cache never has holes."""

    k: Tensor  # (L, B, nkv, T_max, hs)
    v: Tensor  # (L, B, nkv, T_max, hs)
    pos: int | Tensor = 0  # a 0-d int64 device tensor for static shapes: attention then reads the whole buffer, masked

    @staticmethod
    def empty(cfg: DuoConfig, batch: int, max_len: int, device=None, dtype=torch.float32) -> KVCache:
        if max_len > cfg.max_seq_len:
            raise ValueError(f"cache length {max_len} exceeds max_seq_len {cfg.max_seq_len}")
        shape = (cfg.n_layer, batch, cfg.n_kv_head, max_len, cfg.d_model // cfg.n_head)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def layer(self, l: int) -> tuple[Tensor, Tensor, int]:
        return self.k[l], self.v[l], self.pos


def padding(attention_mask: Tensor, pos: int, T: int) -> tuple[Tensor, Tensor]:
    """For a batch padded on the left: the attention mask (B, 1, T, pos+T) and the positions (B, T) of T new
    tokens after `pos` cached ones, from `attention_mask` (B, pos+T), 1 for a token and 0 for padding.

    A token's position counts the real tokens before it, so a padded sequence sees the positions it would see
    alone; no query attends to padding, and every query attends to itself (a padding row is never empty, which
    would make SDPA return NaN and spread it through the padding's keys and values)."""
    keep = attention_mask.bool()
    if keep.dim() != 2 or keep.shape[1] != pos + T:
        raise ValueError(f"attention_mask must be (batch, {pos + T}) for {pos} cached and {T} new tokens, got {tuple(keep.shape)}")
    positions = (keep.long().cumsum(1) - 1).clamp(min=0)[:, pos:]  # (B, T)
    allowed = torch.ones(T, pos + T, dtype=torch.bool, device=keep.device).tril(pos)[None] & keep[:, None, :]  # (B, T, pos+T)
    i = torch.arange(T, device=keep.device)
    allowed[:, i, pos + i] = True
    return allowed[:, None], positions


class Block(nn.Module):
    """Attention for every token, then the routed FFN: the residual stream in two lines."""

    def __init__(self, cfg: DuoConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)  # one norm feeds both modules
        self.ffn = RoutedFFN(cfg.d_model, cfg.d_small, cfg.d_big, cfg.kernel, cfg.small_view)

    def forward(
        self,
        x: Tensor,
        choice: Tensor | Callable[[Tensor], Tensor],
        cos: Tensor,
        sin: Tensor,
        kv=None,
        mask=None,
        observe=None,
        counts: tuple[int, int, int] | None = None,
    ) -> Tensor:
        """`choice`: a route's column (0-d or (B, T)), or a function of the normalised state that returns one
        (or soft weights (B, T, 3)): how a router decides, layer by layer. `kv`: this layer's cache, if any.
        `observe(x, y)`, if given, sees the residual stream before and after the FFN, both (B, T, C). `counts`:
        the column's (BIG, SMALL, SKIP) counts when known on the host (RoutedFFN's sorted path then reads none)."""
        x = x + self.attn(self.attn_norm(x), cos, sin, kv, mask)  # (B, T, C): always runs
        u = self.ffn_norm(x)  # (B, T, C): what both modules, and a router, see
        y = x + self.ffn(u, choice(u) if callable(choice) else choice, counts)  # big, small, or nothing
        if observe is not None:  # a router that watches the residual stream (DuoLM._forward_routed)
            observe(x, y)
        return y


def add_trunk(model: nn.Module, cfg: DuoConfig, blocks) -> None:
    """Give `model` the Llama trunk every model here shares, under the names checkpoints use: `embed`, `blocks` (from
    the iterable given), the final `norm`, `lm_head` (None when the head is tied to the embedding) and the RoPE
    tables as the buffers `rope_cos`, `rope_sin` (T_max, hs/2)."""
    model.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
    model.blocks = nn.ModuleList(blocks)
    model.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    model.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
    cos, sin = rope_tables(cfg.max_seq_len, cfg.d_model // cfg.n_head, cfg.rope_theta)
    model.register_buffer("rope_cos", cos, persistent=False)
    model.register_buffer("rope_sin", sin, persistent=False)
    model.one_row = False  # the head's one row through the matrix-vector kernel (kernels.linear), while model/fuse.py says so


def init_weights(model: nn.Module, cfg: DuoConfig) -> None:
    """The init of DuoLM and of every model built of its pieces (the arena's entrants): Normal(0, init_std) for
    every matrix, the projections into the residual stream (attention `o`, FFN `down`) scaled by 1/sqrt(2L);
    biases (routers', gates') 0; RMSNorm gains 1."""
    for name, p in model.named_parameters():
        if p.dim() == 2:
            scaled = name.endswith(("o.weight", "down.weight"))
            nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer) if scaled else cfg.init_std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.ones_(p)


class DuoLM(nn.Module):
    """Token embedding → blocks → final norm → output head (the embedding when tied, else `lm_head`)."""

    def __init__(self, cfg: DuoConfig):
        super().__init__()
        self.cfg = cfg
        add_trunk(self, cfg, (Block(cfg) for _ in range(cfg.n_layer)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) for every matrix; the projections into the residual stream are scaled down."""
        init_weights(self, self.cfg)

    @property
    def output_weight(self) -> Tensor:
        """The output head's weight (V, C): the input embedding's when tied, else `lm_head`'s."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def head(self, x: Tensor) -> Tensor:
        """Final norm and the output projection: (B, T, C) → (B, T, V)."""
        return kernels.linear(self.norm(x), self.output_weight, self.one_row)

    def forward(
        self,
        input_ids: Tensor,
        route: Tensor | None = None,
        targets: Tensor | None = None,
        router=None,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        counts: tuple[tuple[int, int, int], ...] | None = None,
        depth: int | None = None,
    ) -> DuoOutput:
        """`input_ids` (B, T) int64; `route` uint8 (L,) or (B, T, L), None = all BIG, or a tuple of L ints (a static
        route read without a tensor: model/decode.py's compiled step); `targets` (B, T) or None.

        `router`, instead of a route: a callable `router(layer, u)` from the pre-FFN normalised state u (B, T, C)
        to choices (B, T) uint8, or soft weights (B, T, 3); the realised route comes back in `DuoOutput.route`
        (the argmax of soft weights); it may also watch the forward (`_forward_routed`). `cache`: the tokens
        continue the cached ones (positions cache.pos onward), their keys and values are added to it, and cache.pos
        advances by T (model/decode.py).
        `attention_mask` (B, cache.pos + T): 1 for tokens, 0 for padding on the left of shorter sequences (`padding`).
        `counts`: with a per-token route, each layer's (BIG, SMALL, SKIP) token counts, when the caller knows them on
        the host (a route drawn there with exact counts: routing/sample.py `random_route`): the routed FFN then runs
        the sorted path with no host read, compiled too, at the shapes they fix (the same counts at every call, or
        a compiled model recompiles).
        `depth`: with a route, an early exit: only the first `depth` blocks run, then the final norm and the head (a
        self-speculative draft, model/speculate.py); the later layers' cache slots are not written."""
        T = input_ids.shape[1]
        pos = cache.pos if cache is not None else 0
        if isinstance(pos, Tensor):  # device-side position (model/decode.py `Decoder`): nothing read on the host
            at = pos + torch.arange(T, device=pos.device)  # (T,); the cache's length bounds it
            cos, sin = self.rope_cos.index_select(0, at), self.rope_sin.index_select(0, at)
            slots = Slots(at, torch.arange(cache.k.shape[3], device=pos.device) <= at[:, None])  # once, not per layer
            kv = lambda l: (*cache.layer(l)[:2], slots)  # noqa: E731
        else:
            if pos + T > self.cfg.max_seq_len:
                raise ValueError(f"sequence length {pos + T} exceeds max_seq_len {self.cfg.max_seq_len}")
            cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, hs/2)
            at = torch.arange(pos, pos + T, device=input_ids.device)  # (T,) positions of the new tokens
            kv = (lambda l: cache.layer(l)) if cache is not None else (lambda l: None)
        mask = None
        if attention_mask is not None:
            if isinstance(pos, Tensor):
                raise ValueError("attention_mask is not supported with a device-side cache position (Decoder)")
            mask, at = padding(attention_mask.to(input_ids.device), pos, T)
            cos, sin = self.rope_cos[at].unsqueeze(1), self.rope_sin[at].unsqueeze(1)  # (B, 1, T, hs/2): each its own
        if depth is not None and not (isinstance(depth, int) and 1 <= depth <= self.cfg.n_layer):
            raise ValueError(f"depth is a number of layers, 1 to {self.cfg.n_layer}, got {depth!r}")
        if router is not None:
            if route is not None or depth is not None:
                raise ValueError("give a route or a router, not both (and depth goes with a route)")
            out = self._forward_routed(input_ids, router, targets, cos, sin, kv, mask, at.expand(input_ids.shape))
        else:
            out = self._forward_static(input_ids, route, targets, cos, sin, kv, mask, counts, depth)
        if cache is not None:
            cache.pos += T
        return out

    def _forward_static(
        self, input_ids: Tensor, route: Tensor | None, targets: Tensor | None, cos, sin, kv, mask=None, counts=None, depth=None
    ) -> DuoOutput:
        B, T = input_ids.shape
        L = self.cfg.n_layer
        if isinstance(route, tuple):  # a static route as Python ints: what a compiled decode step specialises on
            if len(route) != L or any(c not in (Choice.SKIP, Choice.SMALL, Choice.BIG) for c in route):
                raise ValueError(f"a route tuple needs {L} choices of 0 (skip), 1 (small), 2 (big), got {route}")
            x = self.embed(input_ids)  # (B, T, C)
            for l, block in enumerate(self.blocks[:depth]):  # all of them, or the first `depth` (an early exit)
                x = block(x, int(route[l]), cos, sin, kv(l), mask)
            return self._output(x, targets, torch.tensor(route, dtype=torch.uint8))
        if route is None:
            route = torch.full((L,), Choice.BIG, dtype=torch.uint8)
        check_route(route, L, (B, T))
        if counts is not None:  # given: in a compiled model the only counts there are (the routed FFN's sorted path)
            counts = checked_counts(counts, route, L, B * T, traced=compiling())
        elif route.dim() == 3 and route.device.type == "cpu" and not compiling():  # no graph break
            counts = [tuple(c) for c in host_counts(route).tolist()]  # drawn on the host: counted there, so no layer reads them
        else:
            counts = [None] * L
        # per-token routes are dispatched on the device; a static route is read on the host (one copy, not one per layer)
        # (non_blocking: from pinned memory (train/loop.py) the copy is queued without draining the stream; from
        # pageable memory CUDA copies through a staging buffer before it returns, so the caller may reuse the route)
        route = route.to(input_ids.device, non_blocking=True) if route.dim() == 3 else route.cpu()
        x = self.embed(input_ids)  # (B, T, C)
        for l, block in enumerate(self.blocks[:depth]):  # all of them, or the first `depth` (an early exit)
            x = block(x, route[..., l], cos, sin, kv(l), mask, counts=counts[l])  # route[..., l]: 0-d or (B, T)
        return self._output(x, targets, route)

    def _forward_routed(self, input_ids: Tensor, router, targets: Tensor | None, cos, sin, kv, mask, positions: Tensor) -> DuoOutput:
        """Forward where `router(layer, u)` decides each layer's choices from the state it sees.

        A router may have two more methods, each optional (routers/training_free.py has both): `router.start(model,
        positions)`, called before the first layer with the tokens' positions (B, T) int64 (a stateful router
        resets its per-token state there: nothing carries over from one forward, or one decoding step, to the
        next), and `router.observe(layer, x, y)`, called after each layer's FFN with the residual stream before and
        after it, both (B, T, C)."""
        realised = []  # (B, T) uint8 per layer
        start, observe = getattr(router, "start", None), getattr(router, "observe", None)
        if start is not None:
            start(self, positions)

        def decide(l: int) -> Callable[[Tensor], Tensor]:
            def choose(u: Tensor) -> Tensor:
                d = router(l, u)  # (B, T) uint8 or (B, T, 3) float
                realised.append(d.argmax(-1).to(torch.uint8) if d.is_floating_point() else d)
                return d

            return choose

        x = self.embed(input_ids)  # (B, T, C)
        for l, block in enumerate(self.blocks):
            watch = partial(observe, l) if observe is not None else None  # watch(x, y) = observe(l, x, y)
            x = block(x, decide(l), cos, sin, kv(l), mask, watch)
        return self._output(x, targets, torch.stack(realised, dim=-1))  # route (B, T, L)

    def _output(self, x: Tensor, targets: Tensor | None, route: Tensor) -> DuoOutput:
        logits = self.head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        return DuoOutput(logits=logits, loss=loss, route=route)

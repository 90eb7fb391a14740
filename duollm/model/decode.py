"""Decoding: many sequences at once with a KV cache, each new token routed by a policy (docs/design.md §2).

Attention runs for every token at every layer, so the cache (`KVCache`) is complete whatever the routes; only
the FFN of each new token is routed. A policy is a static route `(L,)`, or a router `router(layer, u) →
choices` that decides from each new token's state (a trained router, or `RandomRouter`). The prompt is run
once (prefill), then one token per step for all sequences together; greedy (temperature 0) or sampling with
temperature and top-k from an explicit generator. Returns the tokens and the route every token took.

`generate` is the readable reference; `Decoder` below, the fast path (CUDA graphs per batch bucket), matches it.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from duollm import kernels
from duollm.kernels import compiled
from duollm.model.fuse import fused
from duollm.model.transformer import DuoLM, KVCache
from duollm.routing.route import Choice, check_route


@dataclass
class Generation:
    """Prompt plus generated tokens, and the route each token took."""

    ids: Tensor  # (B, T0 + n) int64
    route: Tensor  # (B, T0 + n - 1, L) uint8: routes of every token that was run (the last one never is)


def sample(logits: Tensor, temperature: float, top_k: int, gen: torch.Generator | None) -> Tensor:
    """Next tokens (B,) from last-position logits (B, V): argmax at temperature 0, else top-k sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if gen is not None and gen.device != probs.device:  # a host generator: its stream, at the cost of a copy and a sync
        return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(1).to(logits.device)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)  # on the device: nothing read on the host


@torch.no_grad()
def generate(
    model: DuoLM,
    ids: Tensor,
    max_new_tokens: int,
    route: Tensor | None = None,
    router=None,
    temperature: float = 0.0,
    top_k: int = 0,
    gen: torch.Generator | None = None,
) -> Generation:
    """Continue every prompt of `ids` (B, T0) by `max_new_tokens` tokens; `route` (L,) or `router` picks routes."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model.eval()
    B, T0 = ids.shape
    L = model.cfg.n_layer
    if route is None and router is None:
        route = torch.full((L,), Choice.BIG, dtype=torch.uint8)
    p = next(model.parameters())
    cache = KVCache.empty(model.cfg, B, T0 + max_new_tokens - 1, device=ids.device, dtype=p.dtype)
    out = model(ids, route=route, router=router, cache=cache)  # prefill

    def per_token(r: Tensor, T: int) -> Tensor:  # a static route comes back (L,) on the host
        return r.to(ids.device).expand(B, T, L)

    routes = [per_token(out.route, T0)]
    for step in range(max_new_tokens):
        nxt = sample(out.logits[:, -1], temperature, top_k, gen)  # (B,)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if step == max_new_tokens - 1:
            break
        out = model(nxt[:, None], route=route, router=router, cache=cache)  # one token per sequence
        routes.append(per_token(out.route, 1))
    return Generation(ids, torch.cat(routes, dim=1))


class Decoder:
    """Batched decoding with each step captured as a CUDA graph, one per batch-size bucket: the fast path of
    `generate`, with the same tokens and routes (docs/speed.md, "Decoding").

    A decoder owns static buffers: the KV cache for up to `max_batch` sequences of `max_len` tokens, the step's
    input tokens and the position, a 0-d tensor on the device. One step reads only those (attention reads the
    whole cache buffer under a mask, model/transformer.py), so it can be recorded once and replayed: eager
    decoding launches some 20 kernels per layer, each costing ~10 µs of host time, which at batch 1 is several
    times the weight-reading time of the step. Graphs are recorded per bucket b (1, 2, 4, …, max_batch) on the
    first b rows of the buffers; B sequences replay the smallest bucket ≥ B, and the rows past B compute values
    nobody reads. The prompt runs eagerly (prefill), then one replay per new token.

    A step may also take `t` tokens per sequence (up to `step_tokens`), each recorded once per (bucket, t): what
    a speculative decoder's check of its drafts runs (model/speculate.py `SpeculativeDecoder`); with `depth`, a
    static route exits after its first `depth` layers (an early-exit draft).

    The policy is fixed per decoder: a static route `(L,)`, or a router whose decisions stay on the device
    (`LinearRouter`, `RouteRouter`, `RandomRouter` without a CPU generator). Inside a graph per-token choices
    go through a sync-free routed FFN (`kernels.choose`: for a decode step's few rows the decode kernel, which reads
    only the modules some row chose, or masked without Triton; grouped above).
    Without CUDA (or with graphs=False) the same
    static-shape step runs eagerly; the tests compare it with `generate` on the CPU.

    Two options make each step fewer, larger kernels (docs/speed.md, "Decoding"): `fuse`, one matmul for each
    attention's q/k/v and each module's gate/up (model/fuse.py, switched on while this decoder decodes), and
    `compile`, the step compiled whole at static shapes (kernels/compiled.py `static_step`) (norms, rotary, SwiGLU and the
    residual adds fused; the static route read as Python ints; per-token choices through the decode kernel's
    custom op, or masked without Triton), recorded as a graph like the eager step. `tune` (with `compile`): Inductor's
    coordinate-descent tuning, which also writes batch 1's matrix-vector products as tuned reductions (kernels/
    compiled.py `static_step`). `one_row` (with `fuse`): batch 1's matrix products through the one-row
    matrix-vector kernels (model/fuse.py `fused`; a Triton path on a GPU), in place of cuBLAS's or Inductor's.
    """

    def __init__(
        self,
        model: DuoLM,
        max_batch: int,
        max_len: int,
        route: Tensor | None = None,
        router=None,
        graphs: bool | None = None,
        fuse: bool = False,
        compile: bool = False,
        step_tokens: int = 1,
        depth: int | None = None,
        tune: bool = False,
        one_row: bool = False,
    ):
        p = next(model.parameters())
        self.model, self.router = model.eval(), router
        L = model.cfg.n_layer
        self.route = torch.full((L,), Choice.BIG, dtype=torch.uint8) if route is None and router is None else route
        if self.route is not None:
            check_route(self.route, L)
            if self.route.dim() != 1:
                raise ValueError(f"a decoder's route is static, shaped ({L},); got {tuple(self.route.shape)} (use a router)")
        if depth is not None and self.route is None:
            raise ValueError("an early exit (depth) goes with a static route, not a router")
        self.depth = depth  # a static route's early exit: only the first `depth` layers run (a speculative draft)
        self.graphs = p.is_cuda if graphs is None else graphs
        if one_row and not fuse:
            raise ValueError("one_row runs the fused step's matrix products through the one-row kernels: it needs fuse")
        self.fuse, self.one_row = fuse, one_row
        self._run = compiled.static_step(self._step, tune) if compile else self._step
        self._static = None if self.route is None else tuple(int(c) for c in self.route)  # what a compiled step reads
        self.max_batch, self.max_len = max_batch, max_len
        self.cache = KVCache.empty(model.cfg, max_batch, max_len, device=p.device, dtype=p.dtype)
        self.tokens = torch.zeros(max_batch, step_tokens, dtype=torch.long, device=p.device)  # the step's input
        self.pos = torch.zeros((), dtype=torch.long, device=p.device)  # where the step's first token goes
        self._graphs: dict[tuple[int, int], tuple] = {}  # (bucket, tokens) → (graph, logits (b, t, V), route)
        self._pool = None  # one memory pool shared by every bucket's graph

    def bucket(self, B: int) -> int:
        b = 1
        while b < B:
            b *= 2
        return min(b, self.max_batch)

    def _step(self, b: int, t: int = 1) -> tuple[Tensor, Tensor]:
        """`self.tokens[:b, :t]`, t tokens for each of the first b sequences, at positions `self.pos`.. (advanced by
        t): logits (b, t, V), route."""
        cache = KVCache(self.cache.k[:, :b], self.cache.v[:, :b], self.pos)
        out = self.model(self.tokens[:b, :t], route=self._static, router=self.router, cache=cache, depth=self.depth)
        return out.logits, out.route

    def _capture(self, b: int, t: int) -> None:
        pos = self.pos.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with kernels.recording():  # the warm-up takes the paths the capture will (kernels.choose)
            with torch.cuda.stream(side):  # warm-up outside the graph: lazy initialisation, workspaces, compilation, tuning
                self._run(b, t)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                logits, route = self._run(b, t)
        self._pool = graph.pool()
        self.pos.copy_(pos)  # the warm-up advanced it (and wrote slots the next real step overwrites)
        self._graphs[b, t] = (graph, logits, route)

    def step(self, b: int, t: int = 1) -> tuple[Tensor, Tensor]:
        """Run the step of bucket b over t tokens each (recorded at its first use): logits (b, t, V), route."""
        if not 1 <= t <= self.tokens.shape[1]:
            raise ValueError(f"a step of {t} tokens; this decoder takes 1 to {self.tokens.shape[1]} (step_tokens)")
        if not self.graphs:
            return self._run(b, t)
        if (b, t) not in self._graphs:
            self._capture(b, t)
        graph, logits, route = self._graphs[b, t]
        graph.replay()
        return logits, route

    @torch.no_grad()
    def generate(
        self, ids: Tensor, max_new_tokens: int, temperature: float = 0.0, top_k: int = 0, gen: torch.Generator | None = None
    ) -> Generation:
        """Like `generate(model, ids, max_new_tokens, route|router, ...)`, through the recorded steps."""
        B, T0 = ids.shape
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if B > self.max_batch or T0 + max_new_tokens - 1 > self.max_len:
            raise ValueError(f"{B} sequences of {T0 + max_new_tokens - 1} tokens exceed the decoder's {self.max_batch} × {self.max_len}")
        with fused(self.model, self.one_row) if self.fuse else nullcontext(False) as rebuilt:
            if rebuilt:  # new fused matrices (the first call, or the model was moved): graphs over old ones are stale
                self._graphs.clear()
            return self._generate(ids, max_new_tokens, temperature, top_k, gen)

    def _generate(self, ids: Tensor, max_new_tokens: int, temperature: float, top_k: int, gen: torch.Generator | None) -> Generation:
        B, T0 = ids.shape
        L, b = self.model.cfg.n_layer, self.bucket(B)
        static = self.route if self.router is None else None
        prefill = KVCache(self.cache.k[:, :B], self.cache.v[:, :B], 0)
        out = self.model(ids, route=static, router=self.router, cache=prefill, depth=self.depth)
        routes = [out.route.to(ids.device).expand(B, T0, L)]
        self.pos.fill_(T0)
        new = ids.new_empty(B, max_new_tokens)
        logits, fixed = out.logits[:, -1], None
        for step in range(max_new_tokens):
            new[:, step] = sample(logits, temperature, top_k, gen)
            if step == max_new_tokens - 1:
                break
            self.tokens[:B, 0] = new[:, step]
            logits, route = self.step(b)
            logits = logits[:B, -1]
            if route.dim() == 1:  # a static route, on the host: not copied per step (a copy from the host's pageable
                fixed = route  # memory waits for the device, leaving it idle while the host launches the next step)
            else:
                routes.append(route[:B].clone())
        if fixed is not None:  # the prefill's route, already on the device: the same static route
            routes.append(routes[0][:, -1:].expand(B, max_new_tokens - 1, L))
        return Generation(torch.cat([ids, new], dim=1), torch.cat(routes, dim=1))

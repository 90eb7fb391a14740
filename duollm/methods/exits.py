"""Early exit on a dense decoder: the machinery the `layerskip` and `halting` entrants share (methods/layerskip.py,
methods/halting.py).

A dense Llama decoder (methods/dense.py's `DenseBlock` at BIG's width; model/transformer.py's `Attention`, `KVCache`
and RoPE tables) in which a token may *exit* after a layer l < L-1. Its hidden state is then frozen: copied forward
unchanged to the last layer (as CALM and LayerSkip do), and its logits are the shared final norm and output head
applied to it. What decides the exit is the method's own: the head's confidence (layerskip), a learned halting
probability (halting). A token that never exits runs every layer, and its logits are the dense model's.

**KV completion.** Later tokens attend to every earlier token at every layer, exited or not: at each layer after its
exit, an exited token computes its key and value only, from its frozen state (the attention-normalised frozen state
through W_k and W_v, RoPE on the key), so the KV cache has no holes and model/transformer.py's `KVCache` serves
decoding unchanged. The readable reference (`ExitLM.trunk`) runs every block on every token and keeps an exited
token's state with `torch.where`: the block's input for that token *is* its frozen state, so the keys and values it
writes are exactly the frozen state's; its query, attention output and FFN are computed and thrown away. It computes
more than it counts.

**Causal, and decoding equals the full forward.** A token's exit depends on its own states only, and those on
tokens <= t; decoding token by token through the KV cache writes the same keys and values and takes the same
decisions as one forward over the sequence.

**FLOPs per token** (routing/cost.py's convention, 2 per weight; `layer_flops`) at position p, exiting after layer e
(e = L-1: it ran every layer):
- every layer l <= e: the dense model's layer, attention projections, scores over the p + 1 keys it reads and BIG's
  FFN 6·d·d_big;
- every layer l > e: its key and value projections only, 2·d·(2·n_kv_head·head_dim) (the norm before them is
  elementwise, not counted; so is RoPE);
- the method's heads: the output head 2·d·V and its checks (layerskip), the halting heads 2·d (halting).
In training (no exits) the layers a sequence ran in full, and the heads the training losses evaluate.

**Budget (optional).** `budget` b in (0, 1] (0: none, the default): `calibrate(windows)` sets `threshold` by
bisection so that the entrant spends, on windows of training text under `eval()`, the FLOPs per token of
`dense:budget=b` (the dense model of equal FLOPs): its FFN share as the arena reports it (docs/arena.md: FLOPs per
token less dense BIG's attention and head, over BIG's FFN FLOPs) is b. Attention saved by an exit counts as saved
compute, head checks and halting heads as spent. `threshold` and `budget` change evaluation only (`eval_options`):
the arena trains once and evaluates each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from duollm.errors import DuoError
from duollm.methods.base import Entrant, MethodOutput, bisect
from duollm.methods.dense import DenseBlock
from duollm.model.transformer import DuoConfig, KVCache, add_trunk, init_weights
from duollm.routing.route import Choice

Stop = Callable[[int, Tensor], Tensor]  # stop(l, x): (B, T) bool, the tokens whose state x (B, T, C) after layer l exits


class Trace(NamedTuple):
    """The trunk's result: every layer's states and each token's exit."""

    states: list[Tensor]  # L × (B, T, C): the state after each layer, frozen from the token's exit on (the last: output's)
    exit: Tensor  # (B, T) int64: the layer after which the token exited; L-1 when it ran every layer


def kv_flops(cfg: DuoConfig) -> int:
    """FLOPs per token of one layer's key and value projections: what an exited token pays at each later layer."""
    return 2 * cfg.d_model * 2 * cfg.n_kv_head * (cfg.d_model // cfg.n_head)


def exit_masks(exit: Tensor, n_layer: int) -> tuple[Tensor, Tensor]:
    """The layers a token that exits after `exit` (B, T) runs in full, and those where it computes keys and values
    only: (B, T, L) bool each."""
    layer = torch.arange(n_layer, device=exit.device)  # (L,)
    ran = layer <= exit[..., None]  # (B, T, L)
    return ran, ~ran


def next_token_loss(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of `logits` (B, T, V) against `targets` (B, T) in fp32, ignore_index -1: the mean, or per token
    (B, T) with `reduction="none"` (0 where the target is -1)."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1, reduction=reduction)
    return loss if reduction != "none" else loss.view(targets.shape)  # rows of V, not (B, V, T): 4x faster


def layer_flops(cfg: DuoConfig, ran: Tensor, kv: Tensor, pos: int = 0) -> Tensor:
    """Trunk FLOPs (B, T) float64 of tokens at positions pos.. that run the layers `ran` (B, T, L) bool in full and
    compute keys and values only at the layers `kv` (B, T, L) bool (module docstring); no head. The table's numbers
    stay host floats, so nothing is read back from the device."""
    B, T, L = ran.shape
    one, three = cfg.cost(1), cfg.cost(3)  # attention at 1 key, and at 2 keys (the mean context of 3 tokens)
    attn, step = one.attn.tolist(), (three.attn - one.attn).tolist()  # per layer; step: one more key, 2·2·d
    big = one.ffn[:, Choice.BIG].tolist()  # per layer: BIG's FFN
    p = torch.arange(pos, pos + T, dtype=torch.float64, device=ran.device)  # (T,) position p reads p + 1 keys
    ran, kv = ran.double(), kv.double()  # (B, T, L) each
    flops = torch.zeros(B, T, dtype=torch.float64, device=ran.device)  # (B, T)
    for l in range(L):
        flops = flops + ran[..., l] * (attn[l] + big[l] + p * step[l]) + kv[..., l] * kv_flops(cfg)  # (B, T)
    return flops


class ExitLM(Entrant):
    """A dense BIG decoder whose tokens may exit early (module docstring). A subclass gives the exit rule
    (`exit_rule`), the FLOPs of its own heads (`head_flops`) and its training forward (`fit`); options `threshold`
    (the rule's, in [0, 1]; 1 never exits) and `budget` are the base's."""

    eval_options = ("threshold", "budget")  # calibration and the exit rule: evaluation only

    def __init__(self, cfg: DuoConfig, threshold: float, budget: float, **options):
        super().__init__(cfg, threshold=threshold, budget=budget, **options)
        if cfg.n_layer < 2:
            raise DuoError(f"{self.method}: early exit needs at least 2 layers, the backbone has {cfg.n_layer}")
        if not isinstance(budget, int | float) or not 0 <= budget <= 1:
            raise DuoError(f"{self.method}: budget is a share of BIG's FFN FLOPs in (0, 1], or 0 for none, got {budget!r}")
        self.set_threshold(threshold)
        self.budget = float(budget) or None  # the arena's `target`; None: not calibrated
        add_trunk(self, cfg, (DenseBlock(cfg, cfg.d_big) for _ in range(cfg.n_layer)))

    def reset_parameters(self) -> None:
        """DuoLM's init: Normal(0, init_std) matrices, projections into the residual stream scaled down by sqrt(2 L),
        biases 0."""
        init_weights(self, self.cfg)

    def set_threshold(self, threshold: float) -> None:
        """The exit rule's threshold in [0, 1] (1: no token exits); `options` follow, so a saved model keeps it."""
        if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise DuoError(f"{self.method}: threshold must be a number in [0, 1] (1: never exit), got {threshold!r}")
        self.threshold = self.options["threshold"] = float(threshold)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """KV completion leaves no holes, so the dense model's KV cache serves as it is."""
        p = self.embed.weight
        return KVCache.empty(self.cfg, batch, max_len, device=p.device, dtype=p.dtype)

    def head(self, x: Tensor) -> Tensor:
        """The shared final norm and output head: (B, T, C) → (B, T, V)."""
        return F.linear(self.norm(x), self.embed.weight if self.lm_head is None else self.lm_head.weight)

    def exit_rule(self) -> tuple[tuple[int, ...], Stop]:  # pragma: no cover
        """The layers after which a token may exit and `stop`, a rule made fresh for each forward."""
        raise NotImplementedError

    def head_flops(self, exit: Tensor) -> Tensor:  # pragma: no cover
        """FLOPs (B, T) float64 of the output head and the method's own heads for tokens exiting after `exit` (B, T)."""
        raise NotImplementedError

    def fit(self, ids: Tensor, targets: Tensor | None) -> MethodOutput:  # pragma: no cover
        """The training forward (`model.train()`): no exits, the method's training losses."""
        raise NotImplementedError

    def trunk(self, ids: Tensor, cache: KVCache | None = None, at: tuple[int, ...] = (), stop: Stop | None = None, dropped=None) -> Trace:
        """Embedding and blocks over `ids` (B, T) int64, continuing `cache` if given (cache.pos advances by T).

        After each layer l in `at` (all below L-1), the tokens `stop(l, x)` names exit: their state stays as it is
        from then on (`torch.where`), every later block computing their keys and values from it (KV completion).
        `dropped` (B, L) bool, in training: sequence b skips layer l whole (layer dropout)."""
        B, T = ids.shape
        pos = 0 if cache is None else int(cache.pos)
        if pos + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {pos + T} exceeds max_seq_len {self.cfg.max_seq_len}")
        L = self.cfg.n_layer
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, hs/2)
        x = self.embed(ids)  # (B, T, C)
        done = torch.zeros(B, T, dtype=torch.bool, device=ids.device)  # (B, T): exited before this layer
        exit = torch.full((B, T), L - 1, dtype=torch.long, device=ids.device)  # (B, T)
        states = []
        for l, block in enumerate(self.blocks):
            y = block(x, cos, sin, None if cache is None else cache.layer(l))  # (B, T, C): every token writes keys here
            keep = done if dropped is None else done | dropped[:, l, None]  # (B, T): the tokens whose state stays
            x = torch.where(keep[..., None], x, y)  # (B, T, C)
            states.append(x)
            if l in at:
                new = stop(l, x) & ~done  # (B, T)
                exit = torch.where(new, l, exit)
                done = done | new
        if cache is not None:
            cache.pos += T
        return Trace(states, exit)

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache: KVCache | None = None) -> MethodOutput:
        """`ids` (B, T) int64, `targets` (B, T) or None (ignore_index -1), `cache` from `new_cache` or None. Under
        `eval()` the exit rule decides; in training `fit` (no cache)."""
        if self.training:
            if cache is not None:
                raise DuoError(f"{self.method}: the training forward takes no cache; decode under eval()")
            return self.fit(ids, targets)
        pos = 0 if cache is None else int(cache.pos)
        states, exit = self.trunk(ids, cache, *self.exit_rule())
        logits = self.head(states[-1])  # (B, T, V): each token's state at its exit layer
        loss = None if targets is None else next_token_loss(logits, targets)
        flops = layer_flops(self.cfg, *exit_masks(exit, self.cfg.n_layer), pos) + self.head_flops(exit)  # (B, T)
        L = self.cfg.n_layer
        depth, exited = torch.stack([(exit + 1).double().mean() / L, (exit < L - 1).double().mean()]).tolist()  # one host sync
        stats = {"depth": depth, "exited": exited}  # the share of layers run in full, the share of tokens that exited early
        return MethodOutput(logits=logits, loss=loss, aux=torch.zeros((), device=ids.device), flops=flops, stats=stats)

    @torch.no_grad()
    def realised_share(self, windows: Tensor, batch_size: int = 16) -> float:
        """The FFN share the arena reports (docs/arena.md) under `eval()` over `windows` (W, T) int64, each window
        predicting its last T-1 tokens as the arena evaluates: (FLOPs per token − dense BIG's attention and head) /
        BIG's FFN FLOPs, the dense BIG model's at the same positions."""
        was_training = self.training
        self.eval()
        flops = sum(float(self(w[:, :-1]).flops.sum()) for w in windows.split(batch_size))
        self.train(was_training)
        W, T = windows.shape
        table = self.cfg.cost(T - 1)  # positions 0..T-2: the mean context of T-1 tokens
        return (flops / (W * (T - 1)) - float(table.attn.sum()) - table.head) / float(table.ffn[:, Choice.BIG].sum())

    @torch.no_grad()
    def calibrate(self, windows: Tensor, batch_size: int = 16, iters: int = 30) -> float | None:
        """With a `budget`: set `threshold` by bisection so that the realised FFN share over held-out `windows` (W, T)
        int64 is `budget`; returns the share reached (a step function of the threshold: as close as the windows'
        tokens allow). Without one: nothing, None. A higher threshold exits fewer tokens, spending more."""
        if self.budget is None:
            return None
        windows = windows.to(self.embed.weight.device)

        def at(t: float) -> float:
            self.set_threshold(t)
            return self.realised_share(windows, batch_size)

        return bisect(at, self.budget, iters, rising=True, bounds=(0.0, 1.0))[1]  # a threshold is a probability

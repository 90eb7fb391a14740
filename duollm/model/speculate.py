"""Self-speculative greedy decoding: the Duo model drafts with one of its own cheap routes and checks with all-BIG.

    seq, stats = speculative_greedy(model, ids, 40, draft=parse_route("SSSS"), k=4)

Each round, the draft route (a static route: all-SMALL, a route with SKIP layers, any route string, and optionally an
early exit: only its first `depth` layers, then the head) proposes `k`
tokens greedily, one at a time through its own KV cache; then all-BIG runs once over the tokens it has not seen and
the `k` drafts together, and the longest prefix of drafts that equals all-BIG's own greedy choice is kept, followed by
all-BIG's choice at the first disagreement (or after the last draft, when every draft is kept). Every kept token is
one that all-BIG's greedy decoding would have produced, so the output is all-BIG greedy decoding, token for token
(up to float rounding between a forward over k + 1 tokens and k + 1 forwards of one, which can only matter at an exact
tie), and each round adds at least one token.

Two caches, because the draft's hidden states differ from all-BIG's wherever its route does: after a round each is
cut back (`pos`) to the tokens it computed that were kept; a later write overwrites what lies beyond. The draft, which
never computed the last token of a round, takes it as the first of its next input.

Cost per round: `k` draft steps at the draft route's FLOPs, and one all-BIG forward over `k` + 1 tokens (or more, the
first round's prompt aside). Whether that is faster than plain all-BIG decoding depends on the acceptance rate and
on what a step costs in time (docs/speed.md); the FLOPs count is in the returned stats. Batch 1: the sequences of a
batch would accept different numbers of drafts.

`speculative_greedy` is the readable reference; `SpeculativeDecoder` below, the fast path, gives the same tokens and
counts: its draft steps and all-BIG's checks are static-shape steps of two `Decoder`s (model/decode.py), each
recorded as a CUDA graph on a GPU, and a round reads one number on the host, the drafts kept.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from duollm.model.decode import Decoder
from duollm.model.fuse import fused
from duollm.model.transformer import DuoLM, KVCache
from duollm.routing.route import Choice, check_route


class _Flops:
    """Forward FLOPs of n tokens at positions start.. under all-BIG or the draft route, over the layers each runs (all,
    or the draft's first `depth`) (routing/cost.py: FFN and head per token, attention affine in the context)."""

    def __init__(self, cfg, draft: Tensor, depth: int | None = None):
        L = cfg.n_layer
        if depth is not None and not (isinstance(depth, int) and 1 <= depth <= L):
            raise ValueError(f"depth is a number of layers, 1 to {L}, got {depth!r}")
        one, three = cfg.cost(1), cfg.cost(3)  # at one key, and at two on average (attention affine in the context)
        big = torch.full((L,), Choice.BIG, dtype=torch.uint8)
        self.parts = {}  # which → (FFN and head per token, attention at one key, at two)
        for which, route, n in (("big", big, L), ("draft", draft, L if depth is None else depth)):
            ffn = float(one.ffn[torch.arange(n), route[:n].long()].sum())
            self.parts[which] = (ffn + one.head, float(one.attn[:n].sum()), float(three.attn[:n].sum()))

    def __call__(self, which: str, start: int, n: int) -> float:
        per, a1, a3 = self.parts[which]
        return n * per + sum(a1 + q * (a3 - a1) for q in range(start, start + n))


@torch.no_grad()
def speculative_greedy(model: DuoLM, ids: Tensor, n_new: int, draft: Tensor, k: int = 4, depth: int | None = None) -> tuple[Tensor, dict]:
    """Greedy continuation of `ids` (1, T0) by `n_new` tokens, drafted by the static route `draft` (L,) uint8 in rounds
    of `k` (exiting after its first `depth` layers, if given) and verified by all-BIG (module docstring). Returns (ids (1, T0 + n_new), stats): `rounds`, `drafted`,
    `accepted` (drafts kept), `acceptance` = accepted / drafted, `flops` (forward FLOPs spent, draft and verifier,
    prefills included) and `flops_all_big` (what plain all-BIG decoding spends on the same tokens)."""
    B, T0 = ids.shape
    if B != 1:
        raise ValueError(f"speculative decoding takes one sequence at a time, got a batch of {B}")
    if n_new < 1 or k < 1:
        raise ValueError(f"n_new and k must be >= 1, got {n_new} and {k}")
    cfg, L = model.cfg, model.cfg.n_layer
    big = torch.full((L,), Choice.BIG, dtype=torch.uint8)
    draft = draft.to(torch.uint8).cpu()
    model.eval()
    p = next(model.parameters())
    room = T0 + n_new  # a round drafts no more than are still wanted, so nothing is computed past the last token
    if room > cfg.max_seq_len:
        raise ValueError(f"{T0} + {n_new} tokens exceed max_seq_len {cfg.max_seq_len}")
    verifier = KVCache.empty(cfg, 1, room, device=ids.device, dtype=p.dtype)
    drafter = KVCache.empty(cfg, 1, room, device=ids.device, dtype=p.dtype)
    cost = _Flops(cfg, draft, depth)
    flops = 0.0
    seq = ids
    logits = model(seq, route=big, cache=verifier).logits[:, -1]  # (1, V): all-BIG's prefill
    flops += cost("big", 0, T0)
    seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)  # all-BIG's first token
    rounds = drafted = accepted = 0
    while seq.shape[1] < T0 + n_new:
        n = min(k, T0 + n_new - seq.shape[1])  # drafts this round: no more than are still wanted
        start = int(drafter.pos)
        step = seq[:, start:]  # (1, m): the tokens the drafter has not seen (the prompt, at first)
        drafts = []
        for _ in range(n):
            flops += cost("draft", int(drafter.pos), step.shape[1])
            step = model(step, route=draft, cache=drafter, depth=depth).logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            drafts.append(step)
        drafts = torch.cat(drafts, dim=1)  # (1, n)
        new = torch.cat([seq[:, int(verifier.pos) :], drafts], dim=1)  # (1, m + n): unseen tokens, then the drafts
        flops += cost("big", int(verifier.pos), new.shape[1])
        choice = model(new, route=big, cache=verifier).logits.argmax(-1)[:, -n - 1 :]  # (1, n + 1): all-BIG after each
        agree = (choice[:, :n] == drafts)[0].long().cumprod(0)  # (n,) 1 up to the first disagreement
        a = int(agree.sum())  # drafts kept
        seq = torch.cat([seq, drafts[:, :a], choice[:, a : a + 1]], dim=1)
        verifier.pos = seq.shape[1] - 1  # everything but the last token was computed by all-BIG
        drafter.pos = min(int(drafter.pos), seq.shape[1] - 1)  # the drafter's computed tokens that were kept
        rounds, drafted, accepted = rounds + 1, drafted + n, accepted + a
    seq = seq[:, : T0 + n_new]
    return seq, _stats(rounds, drafted, accepted, flops, cost("big", 0, T0 + n_new - 1))  # all-BIG: a token at a time


def _stats(rounds: int, drafted: int, accepted: int, flops: float, plain: float) -> dict:
    stats = {"rounds": rounds, "drafted": drafted, "accepted": accepted, "acceptance": accepted / max(drafted, 1)}
    return stats | {"flops": flops, "flops_all_big": plain}


class SpeculativeDecoder:
    """`speculative_greedy`'s fast path, with the same tokens and counts: the drafter is a `Decoder` of the draft
    route, the verifier a `Decoder` of all-BIG whose steps take the k + 1 tokens of a round at once; each is a static-
    shape step recorded as a CUDA graph on a GPU (per number of tokens: the drafter's first step of a round takes
    one or two, the verifier's k + 1, or fewer in the last round). Positions and tokens move on the device; a
    round reads the number of drafts kept on the host, once. `fuse` and `compile` as for `Decoder`; `depth`, the
    draft's early exit.

    One sequence (batch 1) of at most `max_len` tokens, prompt included."""

    def __init__(
        self,
        model: DuoLM,
        max_len: int,
        draft: Tensor,
        k: int = 4,
        graphs: bool | None = None,
        fuse: bool = False,
        compile: bool = False,
        depth: int | None = None,
    ):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        L = model.cfg.n_layer
        self.draft = check_route(draft.to(torch.uint8).cpu(), L)
        self.model, self.k, self.max_len, self.fuse = model.eval(), k, max_len, fuse
        big = torch.full((L,), Choice.BIG, dtype=torch.uint8)
        opts = {"graphs": graphs, "compile": compile}
        self.verifier = Decoder(model, 1, max_len, route=big, step_tokens=k + 1, **opts)
        self.drafter = Decoder(model, 1, max_len, route=self.draft, step_tokens=2, depth=depth, **opts)
        self.cost = _Flops(model.cfg, self.draft, depth)

    @torch.no_grad()
    def generate(self, ids: Tensor, n_new: int) -> tuple[Tensor, dict]:
        """Like `speculative_greedy(model, ids, n_new, draft, k)`: (ids (1, T0 + n_new), stats)."""
        B, T0 = ids.shape
        if B != 1:
            raise ValueError(f"speculative decoding takes one sequence at a time, got a batch of {B}")
        if n_new < 1:
            raise ValueError(f"n_new must be >= 1, got {n_new}")
        if T0 + n_new > self.max_len:
            raise ValueError(f"{T0} + {n_new} tokens exceed the decoder's {self.max_len}")
        with fused(self.model) if self.fuse else nullcontext(False) as rebuilt:
            if rebuilt:  # new fused matrices: graphs over the old ones are stale
                self.verifier._graphs.clear(), self.drafter._graphs.clear()
            return self._generate(ids, n_new)

    def _generate(self, ids: Tensor, n_new: int) -> tuple[Tensor, dict]:
        V, D, cost, k = self.verifier, self.drafter, self.cost, self.k
        T0, end = ids.shape[1], ids.shape[1] + n_new
        seq = ids.new_zeros(1, end + k)  # room for a round's drafts past the end (cut at return)
        seq[:, :T0] = ids
        for dec in (V, D):  # prefill, eager: the prompt into each cache
            out = self.model(ids, route=dec.route, cache=KVCache(dec.cache.k, dec.cache.v, 0), depth=dec.depth)
            if dec is V:
                seq[:, T0] = out.logits[0, -1].argmax(-1)  # all-BIG's first token
        flops = cost("big", 0, T0)
        length, v_seen, d_seen = T0 + 1, T0, T0  # tokens in seq; tokens each cache holds (its computed prefix)
        rounds = drafted = accepted = 0
        drafts = ids.new_zeros(k)
        while length < end:
            n = min(k, end - length)
            t = length - d_seen  # the drafter's unseen tokens: one, or two after a round that kept every draft
            if d_seen == T0:  # the drafter's prefill ran eagerly above; the reference counts it in its first step
                flops += cost("draft", 0, T0)
            D.tokens[0, :t] = seq[0, d_seen:length]
            D.pos.fill_(d_seen)
            for i in range(n):
                flops += cost("draft", d_seen + (t - 1 if i else 0) + i, t if i == 0 else 1)
                logits, _ = D.step(1, t if i == 0 else 1)
                drafts[i] = logits[0, -1].argmax(-1)
                if i < n - 1:
                    D.tokens[0, 0] = drafts[i]
            d_seen = length + n - 1  # what the drafter computed: seq, and the drafts but the last
            m = length - v_seen  # the verifier's unseen tokens of seq (one), then the drafts
            V.tokens[0, :m] = seq[0, v_seen:length]
            V.tokens[0, m : m + n] = drafts[:n]
            V.pos.fill_(v_seen)
            flops += cost("big", v_seen, m + n)
            logits, _ = V.step(1, m + n)
            choice = logits[0, -n - 1 :].argmax(-1)  # (n + 1,): all-BIG's own token after each
            a = int((choice[:n] == drafts[:n]).long().cumprod(0).sum())  # drafts kept: the round's one host read
            seq[0, length : length + a] = drafts[:a]
            seq[0, length + a] = choice[a]
            length += a + 1
            v_seen, d_seen = length - 1, min(d_seen, length - 1)
            rounds, drafted, accepted = rounds + 1, drafted + n, accepted + a
        return seq[:, :end], _stats(rounds, drafted, accepted, flops, cost("big", 0, end - 1))

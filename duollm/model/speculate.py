"""Self-speculative greedy decoding: the Duo model drafts with one of its own cheap routes and checks with all-BIG.

    seq, stats = speculative_greedy(model, ids, 40, draft=parse_route("SSSS"), k=4)

Each round, the draft route (a static route: all-SMALL, a route with SKIP layers, any route string) proposes `k`
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
"""

from __future__ import annotations

import torch
from torch import Tensor

from duollm.model.transformer import DuoLM, KVCache
from duollm.routing.cost import route_cost
from duollm.routing.route import Choice


@torch.no_grad()
def speculative_greedy(model: DuoLM, ids: Tensor, n_new: int, draft: Tensor, k: int = 4) -> tuple[Tensor, dict]:
    """Greedy continuation of `ids` (1, T0) by `n_new` tokens, drafted by the static route `draft` (L,) uint8 in rounds
    of `k` and verified by all-BIG (module docstring). Returns (ids (1, T0 + n_new), stats): `rounds`, `drafted`,
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
    table = cfg.cost(1)  # at one key; attention at more keys below (routing/cost.py: affine in the context)
    one, three = float(table.attn.sum()), float(cfg.cost(3).attn.sum())
    per_big, per_draft = (float(route_cost(r, table)) - one for r in (big, draft))  # FFN and head per token

    def attention(start: int, n: int) -> float:  # attention FLOPs of n tokens at positions start.., every layer
        return sum(one + q * (three - one) for q in range(start, start + n))

    flops = 0.0
    seq = ids
    logits = model(seq, route=big, cache=verifier).logits[:, -1]  # (1, V): all-BIG's prefill
    flops += T0 * per_big + attention(0, T0)
    seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)  # all-BIG's first token
    rounds = drafted = accepted = 0
    while seq.shape[1] < T0 + n_new:
        n = min(k, T0 + n_new - seq.shape[1])  # drafts this round: no more than are still wanted
        start = int(drafter.pos)
        step = seq[:, start:]  # (1, m): the tokens the drafter has not seen (the prompt, at first)
        drafts = []
        for _ in range(n):
            flops += step.shape[1] * per_draft + attention(int(drafter.pos), step.shape[1])
            step = model(step, route=draft, cache=drafter).logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            drafts.append(step)
        drafts = torch.cat(drafts, dim=1)  # (1, n)
        new = torch.cat([seq[:, int(verifier.pos) :], drafts], dim=1)  # (1, m + n): unseen tokens, then the drafts
        flops += new.shape[1] * per_big + attention(int(verifier.pos), new.shape[1])
        choice = model(new, route=big, cache=verifier).logits.argmax(-1)[:, -n - 1 :]  # (1, n + 1): all-BIG after each
        agree = (choice[:, :n] == drafts)[0].long().cumprod(0)  # (n,) 1 up to the first disagreement
        a = int(agree.sum())  # drafts kept
        seq = torch.cat([seq, drafts[:, :a], choice[:, a : a + 1]], dim=1)
        verifier.pos = seq.shape[1] - 1  # everything but the last token was computed by all-BIG
        drafter.pos = min(int(drafter.pos), seq.shape[1] - 1)  # the drafter's computed tokens that were kept
        rounds, drafted, accepted = rounds + 1, drafted + n, accepted + a
    seq = seq[:, : T0 + n_new]
    plain = (T0 + n_new - 1) * per_big + attention(0, T0 + n_new - 1)  # all-BIG: prefill, then a token at a time
    stats = {"rounds": rounds, "drafted": drafted, "accepted": accepted, "acceptance": accepted / max(drafted, 1)}
    return seq, stats | {"flops": flops, "flops_all_big": plain}

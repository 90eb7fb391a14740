"""SMALL modules adapted to the whole model: a short random-routing fine-tune towards the all-BIG model's predictions.

Slicing and distillation teach each SMALL module alone, on the all-BIG states. In use, a SMALL module sees the
states that earlier SMALL (and BIG) modules made, and its errors add up over the layers. Adaptation trains every
SMALL module at once, in the model: each step draws a random route (each token and layer BIG with probability
`p_big`, else SMALL, as stage-1 training does), and the loss is the KL divergence from the all-BIG model's
next-token distribution on the same tokens to the routed model's. Only SMALL's weights change: attention, norms,
embeddings, the head and every BIG module stay as imported, so the all-BIG route still computes the pretrained
model exactly, and the teacher is the model itself under the all-BIG route (no second copy).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from duollm.data.corpus import sample_batch
from duollm.model.transformer import DuoLM
from duollm.routing.sample import random_route


def small_parameters(model: DuoLM) -> list[Tensor]:
    return [p for n, p in model.named_parameters() if ".small." in n]


def routed_kl(model: DuoLM, ids: Tensor, route: Tensor) -> Tensor:
    """KL(all-BIG ‖ routed) per token, averaged over the batch's (B, T) tokens: a scalar, differentiable in SMALL."""
    with torch.no_grad():
        teacher = F.log_softmax(model(ids).logits.float(), dim=-1)  # (B, T, V): route None = all BIG
    student = F.log_softmax(model(ids, route=route).logits.float(), dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1).mean()


def adapt_small(
    model: DuoLM,
    tokens: np.ndarray,
    steps: int = 200,
    lr: float = 3e-4,
    batch: int = 8,
    seq_len: int = 256,
    p_big: float = 0.5,
    seed: int = 0,
    held_out: Tensor | None = None,
) -> dict:
    """Train SMALL's weights on `steps` random batches of `tokens` (AdamW, cosine decay); the rest of `model` stays as
    it is. Returns the mean KL of the first and last tenth of the steps and, given `held_out` (B, T) windows, its
    KL under one fixed random route before and after."""
    gen = torch.Generator().manual_seed(seed)
    device = model.embed.weight.device
    was = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    params = small_parameters(model)
    for p in params:
        p.requires_grad_(True)
    L = model.cfg.n_layer
    fixed = (
        random_route((*held_out.shape, L), p_big, 1 - p_big, 0.0, torch.Generator().manual_seed(seed + 1)) if held_out is not None else None
    )
    out: dict = {"steps": steps, "lr": lr, "tokens_per_step": batch * seq_len, "p_big": p_big}
    if held_out is not None:
        with torch.no_grad():
            out["held_out_kl_before"] = float(routed_kl(model, held_out.to(device), fixed.to(device)))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)  # lr → 0 at the last step
    losses = []
    model.train()
    try:
        for _ in range(steps):
            x = sample_batch(tokens, batch, seq_len, gen)  # (B, T): the KL needs no targets
            route = random_route((batch, seq_len, L), p_big, 1 - p_big, 0.0, gen)
            loss = routed_kl(model, x.to(device), route.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    finally:
        model.eval()
        for n, p in model.named_parameters():
            p.requires_grad_(was[n])
    tenth = max(1, steps // 10)
    out.update(first_kl=sum(losses[:tenth]) / tenth, final_kl=sum(losses[-tenth:]) / tenth)
    if held_out is not None:
        with torch.no_grad():
            out["held_out_kl_after"] = float(routed_kl(model, held_out.to(device), fixed.to(device)))
    return out

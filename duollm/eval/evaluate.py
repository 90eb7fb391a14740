"""The evaluation of `duollm eval`: per-token next-token losses and perplexity of a trained run under a policy.

Perplexity = exp(mean next-token cross-entropy) over all predicted positions (docs/design.md §2). The evaluation
data is cut into consecutive windows of `seq_len` tokens; each window predicts its last T-1 tokens. Beside it, the
forward FLOPs per predicted token that the policy's routes (and an early exit's head checks) cost (routing/cost.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from duollm.data.corpus import eval_windows, token_array
from duollm.eval.policy import Policy, run_policy
from duollm.files import atomic_path
from duollm.flags import Count, Positive
from duollm.model.transformer import DuoLM
from duollm.oracle.loss import token_loss
from duollm.routing.cost import CostTable, dense_cost
from duollm.runs.load import load_run


@torch.no_grad()
def token_losses(model: DuoLM, windows: Tensor, policy: Policy, batch_size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Losses (N, T-1) float32 of every window under `policy`, and the routes used, (N, T, L) uint8."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)  # random policies draw from here, batch after batch
    N, T = windows.shape
    L = model.cfg.n_layer
    losses, routes = [], []
    for i in range(0, N, batch_size):
        x = windows[i : i + batch_size].to(device)  # (b, T)
        if policy.router is not None:  # the router decides inside the forward; the realised route comes back
            out = model(x, router=policy.router)
            logits, route = out.logits, out.route
        else:
            route = policy.routes(x.shape[0], T, L, gen)  # (L,) or (b, T, L)
            logits = model(x, route=route).logits  # (b, T, V)
        loss = token_loss(logits, x)  # (b, T-1)
        losses.append(loss.cpu())
        routes.append(route.expand(x.shape[0], T, L).cpu() if route.dim() == 1 else route.cpu())
    return torch.cat(losses), torch.cat(routes)


def unigram_losses(train_tokens: np.ndarray, windows: Tensor, vocab_size: int) -> Tensor:
    """Losses (N, T-1) of a unigram model fit on the training tokens (add-one smoothing): the floor to beat."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    logp = torch.from_numpy(np.log(counts / counts.sum()))  # (V,)
    return (-logp[windows[:, 1:]]).float()  # (N, T-1)


def summarize(losses: Tensor) -> dict:
    mean = float(losses.double().mean())
    return {"tokens": int(losses.numel()), "loss": round(mean, 5), "ppl": round(math.exp(mean), 4)}


def flops_per_token(policy: Policy, routes: Tensor, table: CostTable) -> dict:
    """The forward FLOPs the policy spent per predicted token (the routes (N, T, L) of `token_losses`, less each
    window's last token, whose output nothing scores; routing/cost.py), and those of all-BIG beside them."""
    flops = policy.flops(routes[:, :-1], table)  # (N, T-1) float64
    return {"flops_per_token": round(float(flops.mean())), "flops_all_big": round(dense_cost(table))}


@dataclass
class EvalSpec:
    """The settings of `evaluate`: the run, the policy, the text and its windows."""

    run: str  # run directory (from duollm train)
    policy: str = "all-big"  # all-big, all-small, random:P, a route string like BBSS (B/S/- per layer), router:NAME, skipllm:T, exit:T
    split: str = "prose-val"  # built-in split (prose-val, code-val) ...
    data: str = ""  # ... or a user's text file, folder or .jsonl (overrides --split)
    seq_len: Count = 0  # window length; 0 = the run's train.seq_len
    max_tokens: Count = 0  # evaluate at most this many tokens; 0 = all
    batch_size: Positive = 32
    seed: Count = 0  # for random policies


def evaluate(cmd: EvalSpec) -> dict:
    """Evaluate and save the per-token losses and routes under `RUN/evals/`."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, model, tok = load_run(Path(cmd.run), device)
    policy = run_policy(Path(cmd.run), cmd.policy, model, device)
    source = cmd.data or cmd.split
    windows = eval_windows(token_array(source, tok), cmd.seq_len or cfg.train.seq_len, cmd.max_tokens or None)
    losses, routes = token_losses(model, windows, policy, cmd.batch_size, cmd.seed)
    res = {"policy": cmd.policy, "split": source, **summarize(losses), **flops_per_token(policy, routes, model.cfg.cost(windows.shape[1]))}
    folder = Path(cmd.run) / "evals"
    folder.mkdir(exist_ok=True)
    name = f"{Path(source).name}__{cmd.policy.replace(':', '_')}.safetensors"
    with atomic_path(folder / name) as tmp:
        tensors = {"loss": losses.contiguous(), "input_ids": windows.contiguous(), "route": routes.contiguous()}
        save_file(tensors, tmp, metadata={k: str(v) for k, v in res.items()})
    return res

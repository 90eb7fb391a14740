"""The arena's entrants behind one small interface (docs/arena.md).

An entrant is a causal language model, an `nn.Module` subclass of `Entrant`, whose compute per token may vary:

    model = build("mod", cfg, capacity=0.125)          # methods/__init__.py; cfg: the backbone's DuoConfig
    out = model(ids, targets=targets)                  # MethodOutput
    loss = out.loss + out.aux                          # what the arena's training loop minimises
    out.flops                                          # (B, T) counted forward FLOPs of each token
    cache = model.new_cache(batch, max_len)            # decoding: forward(ids, cache=cache) continues the cache
    greedy(model, prompt, n_new)                       # token-by-token greedy decoding through the cache

The rules every entrant keeps (tests/methods/ checks each registered method against them):
- **Causal at evaluation.** Under `model.eval()` a token's decisions, FLOPs and logits depend on tokens <= t
  only. A method whose training-time routing is not causal (top-k over the sequence) routes with its causal
  predictor under `eval()`; `model.train()` may use the non-causal rule.
- **Decoding equals the full forward.** Under `eval()`, feeding a sequence token by token through `new_cache`
  gives the same logits (up to float error) and the same decisions as one forward over it.
- **FLOPs from the one table.** `out.flops` counts matmul FLOPs as `routing/cost.py` does (2 per weight per
  token; attention scores at the mean causal context; the head once, plus any extra head evaluations).
- **Rebuildable.** `model.options` holds the JSON-able keyword arguments `build` took, so that `save_entrant` /
  `load_entrant` (methods/__init__.py) round-trip a model through safetensors and JSON, never pickle.

A new method: a module here with an `Entrant` subclass, and one line in `METHODS` of methods/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import save
from torch import Tensor, nn

from duollm.files import write_bytes, write_json
from duollm.model.transformer import DuoConfig

ENTRANT_FILE, WEIGHTS_FILE = "entrant.json", "model.safetensors"
SOURCE_FILE = "source.json"  # beside them, written by the arena: the tokenizer the entrant was trained with


@dataclass
class MethodOutput:
    """What an entrant's forward returns."""

    logits: Tensor  # (B, T, V)
    loss: Tensor | None  # scalar: mean next-token cross-entropy when targets were given (ignore_index -1)
    aux: Tensor  # scalar: auxiliary training losses (budget, predictor), a 0-d zero when there are none
    flops: Tensor  # (B, T) float64: counted forward FLOPs of each token under the decisions it took
    stats: dict[str, float] = field(default_factory=dict)  # realised shares for logs, e.g. {"big": 0.49}


class Entrant(nn.Module):
    """Base class: subclasses set `method` (their name in `METHODS`), take `(cfg, **options)` and implement `forward`
    and `new_cache`."""

    method: ClassVar[str] = ""
    eval_options: ClassVar[tuple[str, ...]] = ()  # options that change evaluation only: the arena trains such entrants once
    fixed_compute: ClassVar[bool] = False  # True when the options alone fix every token's compute (not the weights)

    @property
    def decodes(self) -> bool:
        """Whether the entrant decodes through its cache; False for a rule that needs later tokens (mod's top-k)."""
        return True

    def __init__(self, cfg: DuoConfig, **options):
        super().__init__()
        self.cfg, self.options = cfg, dict(options)

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache=None) -> MethodOutput:  # pragma: no cover
        raise NotImplementedError

    def new_cache(self, batch: int, max_len: int):  # pragma: no cover
        """An empty cache for `batch` sequences of up to `max_len` tokens; forward(ids, cache=c) appends to it."""
        raise NotImplementedError


def save_entrant(model: Entrant, folder: str | Path) -> None:
    """Write `entrant.json` (method, backbone config, options) and `model.safetensors` into `folder`, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_bytes(folder / WEIGHTS_FILE, save(state))
    write_json(folder / ENTRANT_FILE, {"method": model.method, "config": asdict(model.cfg), "options": model.options})


def bisect(
    at: Callable[[float], float], target: float, iters: int = 30, rising: bool = False, bounds: tuple[float, float] | None = None
) -> tuple[float, float]:
    """(x, at(x)) for the x where a monotone step function `at` comes nearest `target`: how entrants calibrate one
    offset, threshold or price to a budget on held-out windows. Falling by default (`rising`: increasing). The
    bracket [-1, 1] widens by doubling until it holds the target (`bounds`: a fixed bracket, for a parameter with a
    range such as a probability threshold), then halves `iters` times; the nearer end wins, since where scores tie
    the function jumps. `at` usually sets the model's state as it evaluates: it is called last at the x returned."""
    sign = -1.0 if rising else 1.0
    f = lambda x: sign * at(x)  # noqa: E731  falling in x
    goal = sign * target
    lo, hi = bounds or (-1.0, 1.0)
    for _ in range(0 if bounds else 40):
        if f(lo) >= goal:
            break
        lo *= 2
    for _ in range(0 if bounds else 40):
        if f(hi) <= goal:
            break
        hi *= 2
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > goal else (lo, mid)
    best = min((lo, hi), key=lambda x: abs(f(x) - goal))
    return best, at(best)


@torch.no_grad()
def greedy(model: Entrant, ids: Tensor, n_new: int) -> Tensor:
    """Greedy decoding of `n_new` tokens after `ids` (B, T) through the entrant's cache: (B, T + n_new) int64.

    The prompt goes in one forward, then one token per step; under `eval()` the result equals taking the argmax
    of one full forward position by position (the decode-equals-forward rule)."""
    B, T = ids.shape
    cache = model.new_cache(B, T + n_new)
    out = model(ids, cache=cache)
    seq = [ids]
    for i in range(n_new):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        seq.append(nxt)
        if i + 1 < n_new:
            out = model(nxt, cache=cache)
    return torch.cat(seq, dim=1)

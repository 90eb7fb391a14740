"""`duo-joint`: the Duo model trained from scratch with a hard router in the loop (issue 21, entrant 2).

The backbone is `DuoLM` unchanged (model/transformer.py): its blocks, attention and `RoutedFFN`, driven through its
`router=` interface. Per token and layer a linear router over the pre-FFN normalised state u (the state both
modules see, as the paper router's, routers/linear.py) scores SKIP, SMALL and BIG (the `Choice` order):

    z_l = W_l u + b_l + price · k_l        # (B, T, 3); k_l[c] = FLOPs of choice c at layer l / FLOPs of BIG there
    choice = argmax z_l                    # hard, in training and at evaluation alike; SKIP masked out with skip=False

A token's choice at a layer depends on its own state only, and that state on tokens <= t: the router is causal by
construction, and decoding token by token through the KV cache takes the same choices as one forward.

**Estimator: straight-through softmax** (Bengio et al. 2013, arXiv:1308.3432; the "ST" variant of Jang et al. 2017,
arXiv:1611.01144, without the Gumbel noise). The forward uses the one-hot argmax h; the backward uses the gradient
of p = softmax(z / tau), through the weights `w = h + (p − p.detach())`, exactly h in value. Why not Gumbel-softmax:
a deterministic argmax routes training exactly as evaluation routes, so the cost that the budget term holds at the
target while training is the cost that evaluation realises (sampling would train one routing and evaluate
another, its argmax), and no noise has to be drawn inside the forward (randomness here goes through explicit
generators only, docs/design.md §7.11). What the noise would buy, exploration, the soft gradient gives instead:

- **Both modules run in training.** `RoutedFFN` mixes soft weights as `w_big · big(u) + w_small · small(u)`, so with
  `w` one-hot in value every token's output is that of its chosen module, but the router's gradient for choice c
  is <dL/dy, module_c(u)>: the first-order value of each module, chosen or not (SKIP's output is 0). That costs
  the FLOPs of both modules in training, which is fine at toy and arena scale; a module's weights still learn
  only from the tokens that chose it (its weight is 0 elsewhere). Under `eval()` the router returns uint8
  choices and `RoutedFFN` runs only the chosen module on each token.

**Budget.** `budget` is the target fraction of all-BIG FFN FLOPs (0.5, 0.33, ...), from the one cost table
(routing/cost.py): a token's cost fraction is Σ_l ffn[l, c_l] / Σ_l ffn[l, BIG]. `aux = alpha · (c − budget)²`,
where c is the batch mean of that fraction with the straight-through weights: its value is the *realised* hard
cost, its gradient that of the soft expected cost, so the penalty pulls on what the argmax actually spends. No
other auxiliary term. The squared penalty balances the language-model loss's pull towards BIG at an offset of
about (pull / 2·alpha), so after training:

**Calibration** (`calibrate`, then saved in the `price` buffer): one global scalar, set by bisection on held-out
windows so that the argmax routes' mean cost fraction hits `budget`. It enters the logits as `price · k_l`, a price
per unit of compute; as it grows each token's chosen cost can only grow (the argmax of lines in `price` moves to
steeper lines), so the realised fraction is monotone in it and bisection converges. One global price keeps the
router's own split of compute between layers and tokens, like the paper router's offsets (routers/calibrate.py).
Calibrate on windows that are not the evaluation's; the arena then checks ±2 points on its evaluation text.

**FLOPs.** `out.flops` is `route_cost` of the realised route (the forward FLOPs of the choices taken; under
`eval()`, what ran), with each token's attention at its own position (p + 1 keys; averaged over a window from
position 0 that is the table's mean causal context, so a token costs the same in decoding as in a full forward),
plus the router's d × 3 matrix per layer. Training runs both modules, about (1 + d_small / d_big)× the all-BIG FFN
FLOPs, which `out.flops` does not count.

**Against the paper's frozen-base router** (docs/design.md §2): train the stage-1 Duo model with random routing
and fit the paper router on it, at the same cost mix:

    duollm train --out RUN --preset P --train.p_big=0.5 --train.p_small=0.5 [--train.p_skip=...]
    duollm router train --run RUN <paper_router_flags(model)>    # --kind paper --budget ... --options ...
    duollm router eval --run RUN --name NAME

`paper_router_flags` turns this entrant's budget (or its realised shares of BIG, SMALL and SKIP, the fairer
target) into the paper router's `--budget` (shares of choices, not of FLOPs) and `--options`. Same preset, same
training tokens for the stage-1 run as for this entrant: the arena's comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from duollm.errors import DuoError
from duollm.methods.base import Entrant, MethodOutput, bisect
from duollm.model.transformer import DuoConfig, DuoLM, KVCache
from duollm.routers.linear import fp32_scores
from duollm.routing.cost import route_cost
from duollm.routing.route import N_CHOICES, Choice


class JointDuo(Entrant):
    """DuoLM plus one linear router per layer, trained together; hard choices, straight-through gradient."""

    method = "duo-joint"

    def __init__(self, cfg: DuoConfig, budget: float = 0.5, skip: bool = True, alpha: float = 10.0, tau: float = 1.0):
        """`budget`: target fraction of all-BIG FFN FLOPs; `skip`: SKIP allowed (else SMALL and BIG only); `alpha`:
        weight of the budget penalty; `tau`: temperature of the softmax whose gradient the hard choice carries."""
        super().__init__(cfg, budget=float(budget), skip=bool(skip), alpha=float(alpha), tau=float(tau))
        ffn = cfg.cost().ffn  # (L, 3) FLOPs per choice; the FFN part does not depend on the sequence length
        floor = 0.0 if skip else float(ffn[:, Choice.SMALL].sum() / ffn[:, Choice.BIG].sum())
        if not floor < budget <= 1.0:
            raise DuoError(f"duo-joint: budget {budget} must lie in ({floor:.3f}, 1] (all-SMALL costs {floor:.3f} without skip)")
        if alpha < 0 or tau <= 0:
            raise DuoError(f"duo-joint: alpha must be >= 0 and tau > 0, got alpha={alpha}, tau={tau}")
        self.budget, self.alpha, self.tau = float(budget), float(alpha), float(tau)
        self.duo = DuoLM(cfg)
        self.router = nn.ModuleList(nn.Linear(cfg.d_model, N_CHOICES) for _ in range(cfg.n_layer))
        for lin in self.router:  # small random scores: at the start each token's argmax is near uniform over choices
            nn.init.normal_(lin.weight, std=cfg.init_std), nn.init.zeros_(lin.bias)
        self.register_buffer("price", torch.zeros(()))  # calibration: added to the logits as price · k_l
        self.register_buffer("k", (ffn / ffn[:, Choice.BIG : Choice.BIG + 1]).float(), persistent=False)  # (L, 3)
        self.register_buffer("share", (ffn / ffn[:, Choice.BIG].sum()).float(), persistent=False)  # (L, 3): of all-BIG
        mask = torch.zeros(N_CHOICES)
        if not skip:
            mask[Choice.SKIP] = float("-inf")
        self.register_buffer("mask", mask, persistent=False)  # (3,) -inf on choices that are not options

    def logits(self, l: int, u: Tensor) -> Tensor:
        """(B, T, C) → (B, T, 3) fp32 scores over (SKIP, SMALL, BIG) at layer l, price and mask included."""
        with fp32_scores(u):
            return self.router[l](u.float()) + self.price * self.k[l] + self.mask  # (B, T, 3)

    def forward(self, ids: Tensor, targets: Tensor | None = None, cache: KVCache | None = None) -> MethodOutput:
        """`ids` (B, T); in training the router returns one-hot straight-through weights (B, T, 3), under `eval()`
        uint8 choices (B, T), so that only the chosen module runs."""
        pos = cache.pos if cache is not None else 0
        spent = []  # per layer (B, T): the token's share of all-BIG FFN FLOPs, straight-through in training

        def route(l: int, u: Tensor) -> Tensor:
            z = self.logits(l, u)  # (B, T, 3)
            hard = z.argmax(-1)  # (B, T) int64
            if not self.training:
                spent.append(self.share[l][hard])  # (B, T)
                return hard.to(torch.uint8)
            p = (z / self.tau).softmax(-1)  # (B, T, 3); 0 where masked
            w = F.one_hot(hard, N_CHOICES).to(p.dtype) + (p - p.detach())  # (B, T, 3): exactly one-hot, soft gradient
            spent.append(w @ self.share[l])  # (B, T)
            return w

        out = self.duo(ids, targets=targets, router=route, cache=cache)
        cost = torch.stack(spent, -1).sum(-1).mean()  # scalar: realised fraction of all-BIG FFN FLOPs
        aux = self.alpha * (cost - self.budget) ** 2
        flops = self.token_flops(out.route, int(pos))  # (B, T) float64
        stats = {name.lower(): float((out.route == c).float().mean()) for name, c in Choice.__members__.items()}
        stats["cost"] = float(cost.detach())
        return MethodOutput(logits=out.logits, loss=out.loss, aux=aux, flops=flops, stats=stats)

    def token_flops(self, route: Tensor, pos: int = 0) -> Tensor:
        """Forward FLOPs (B, T) float64 of tokens at positions pos.. that took `route` (B, T, L), router included."""
        # attention at position p reads p + 1 keys, the mean causal context of a sequence of 2p + 1 tokens; cost.py's
        # attention is affine in the sequence length, so the tables at lengths 1 and 3 give it at every position
        one, three = self.cfg.cost(1), self.cfg.cost(3)
        p = torch.arange(pos, pos + route.shape[1], dtype=torch.float64)  # (T,)
        attn = p * float(three.attn.sum() - one.attn.sum())  # (T,) beyond position 0's, all layers
        scores = 2 * self.cfg.d_model * N_CHOICES * self.cfg.n_layer  # the router: a d × 3 matrix per layer
        return (route_cost(route.cpu(), one) + attn + scores).to(route.device)  # (B, T)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        w = self.duo.embed.weight
        return KVCache.empty(self.cfg, batch, max_len, device=w.device, dtype=w.dtype)

    @torch.no_grad()
    def realised_cost(self, windows: Tensor, batch_size: int = 16) -> float:
        """Mean fraction of all-BIG FFN FLOPs the argmax routes spend over `windows` (N, T), under `eval()`."""
        was = self.training
        self.eval()
        total = sum(self(w.to(self.price.device)).stats["cost"] * len(w) for w in windows.split(batch_size))  # windows alike long
        self.train(was)
        return total / len(windows)

    @torch.no_grad()
    def calibrate(self, windows: Tensor, batch_size: int = 16, iters: int = 30) -> float:
        """Set `price` by bisection (`base.bisect`: the cost rises with the price) so that the argmax routes spend
        `budget` on `windows` (N, T) (held-out text, not the evaluation's); returns the fraction realised there."""

        def at(price: float) -> float:
            self.price.fill_(price)
            return self.realised_cost(windows, batch_size)

        return bisect(at, self.budget, iters, rising=True)[1]


def paper_router_flags(model: JointDuo, shares: dict[str, float] | None = None) -> list[str]:
    """`duollm router train` flags for the paper's frozen-base router at this entrant's cost: `--kind paper --budget
    B --options O`. `shares` ({"big", "small", "skip"} fractions of choices, e.g. `out.stats` or averaged over
    held-out text): the same mix as the entrant realised. Without it, the mix that meets `model.budget`: BIG and
    SMALL only without skip; with skip, SMALL and SKIP in equal shares, BIG the rest."""
    ffn = model.cfg.cost().ffn  # (L, 3)
    r = float(ffn[:, Choice.SMALL].sum() / ffn[:, Choice.BIG].sum())  # SMALL's cost as a fraction of BIG's
    skip = model.options["skip"]
    if shares is None:
        b = model.budget
        if skip:
            m = (1 - b) / (2 - r)  # big + m·r = b with big + 2m = 1
            shares = {"big": 1 - 2 * m, "small": m, "skip": m}
        else:
            shares = {"big": (b - r) / (1 - r), "small": (1 - b) / (1 - r), "skip": 0.0}
    if not skip:
        return ["--kind", "paper", "--budget", f"{shares['big']:.4f}", "--options", "big,small"]
    big, small = round(shares["big"], 4), round(shares["small"], 4)
    return ["--kind", "paper", "--budget", f"{big:.4f},{small:.4f},{1 - big - small:.4f}", "--options", "big,small,skip"]

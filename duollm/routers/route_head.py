"""The oracle-supervised router (ours): predict each route's loss for a token, take the lowest.

From the causal oracle we know, for training tokens, the loss every route of the budget would give token t
after the oracle's choices for tokens < t (`causal_search(..., keep=True).candidates`). A linear map from
the token's layer-0 pre-FFN state u_0 (which no FFN choice has touched yet, so training and use see the same
input) to those R losses is fitted by ridge regression; at use, each token takes
argmin_r (u_0 · W + b)_r, a whole route inside the budget, so the budget is met exactly.

With W = 0 the router is the `fixed` baseline (b = the mean loss of each route); what the features add is
what it gains per token. The ridge strength, W = 0 included, is chosen on held-out label tokens by the loss
of the routes it picks, so the router falls back to `fixed` where its features predict nothing. Causal: u_0 of token t depends on tokens ≤ t only. The plan made at layer 0 is returned column by
column at the later layers of the same forward.

The priced head (`fit_priced_router`) keeps the budget on average instead: it scores every route (2^L of them,
labelled by the oracle without a budget), and each token takes argmin_r (predicted loss_r + price · cost_r), where
cost_r counts the route's counted layers (BIG of big/small) and one price, set by bisection, makes the average
spend the budget. A token that its state marks as hard can buy more BIG layers than an easy one, which a route
head with exactly F·L counted layers per token cannot do, and which the paper router does (its tokens take 0 to
L BIG layers). Without a clear held-out gain it falls back to the exact-budget route head's fixed route.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from duollm.routers.linear import constrained, fp32_scores


class RouteRouter(nn.Module):
    """Scores every route of a budget from the layer-0 state; each token takes its best-scoring route."""

    def __init__(self, routes: Tensor, d_model: int):
        super().__init__()
        self.register_buffer("routes", routes.to(torch.uint8))  # (R, L)
        self.register_buffer("weight", torch.zeros(d_model, len(routes)))  # (C, R)
        self.register_buffer("bias", torch.zeros(len(routes)))  # (R,)
        self.register_buffer("price", torch.zeros(()))  # per counted layer; 0 where every route costs the same
        self.options = tuple(sorted({int(c) for c in routes.flatten().tolist()}))
        self._plan: Tensor | None = None

    @property
    def cost(self) -> Tensor:
        """(R,) counted layers of each route: BIG of big/small (and of all three), SKIP of big/skip."""
        return (self.routes == constrained(self.options)[0]).sum(1).float()

    def scores(self, u0: Tensor) -> Tensor:
        """(B, T, C) layer-0 states → (B, T, R) predicted loss of each route, in fp32 under autocast too."""
        with fp32_scores(u0):
            return u0.float() @ self.weight + self.bias

    def picks(self, u0: Tensor) -> Tensor:
        """(..., C) layer-0 states → (...) index of each token's route: the lowest predicted loss plus price."""
        return (self.scores(u0) + self.price * self.cost).argmin(-1)

    def forward(self, l: int, u: Tensor) -> Tensor:
        if l == 0:  # decide the whole route of every token now; later layers read their column
            self._plan = self.routes[self.picks(u)]  # (B, T, L)
        return self._plan[..., l]

    def fit(self, feats: Tensor, losses: Tensor, lam: float) -> None:
        """Ridge regression of losses (N, R) on features (N, C); with lam = inf (no features) every token takes
        the route with the lowest mean loss."""
        W, b = ridge(feats, losses, lam)
        self.weight.copy_(W.float())
        self.bias.copy_(b.float())

    def decision_losses(self, feats: Tensor, losses: Tensor) -> Tensor:
        """Loss of the route the router would pick, per token with known losses (N, R): (N,)."""
        pick = self.picks(feats)  # (N,)
        return losses.gather(1, pick[:, None]).squeeze(1)

    def decision_loss(self, feats: Tensor, losses: Tensor) -> float:
        """Mean loss of the routes the router would pick, for tokens with known losses (N, R)."""
        return float(self.decision_losses(feats, losses).mean())


@torch.no_grad()
def layer0_states(model, ids: Tensor) -> Tensor:
    """u_0 = ffn_norm(h + attention) at layer 0, (B, T, C): what RouteRouter sees, before any FFN choice."""
    T = ids.shape[1]
    blk, h = model.blocks[0], model.embed(ids)
    a = h + blk.attn(blk.attn_norm(h), model.rope_cos[:T], model.rope_sin[:T])
    return blk.ffn_norm(a)


RIDGE = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, float("inf"))  # ridge strengths tried (× samples); inf = W = 0, the fixed route


def ridge(X: Tensor, Y: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """(W, b) of ridge regression of Y (N,) or (N, R) on X (N, C), the bias unpenalised, in float64: W (C,) or
    (C, R), b () or (R,). lam is × N; lam = inf gives W = 0 and b = the mean of Y."""
    mu_x, mu_y = X.mean(0), Y.mean(0)
    if lam == float("inf"):
        return torch.zeros(X.shape[1], *Y.shape[1:], dtype=torch.float64, device=X.device), mu_y.double()
    Xc, Yc = (X - mu_x).double(), (Y - mu_y).double()
    W = torch.linalg.solve(Xc.T @ Xc + lam * len(X) * torch.eye(X.shape[1], dtype=Xc.dtype, device=X.device), Xc.T @ Yc)
    return W, mu_y.double() - mu_x.double() @ W


def clear_gain(gain: Tensor) -> bool:
    """Whether a fit beats the feature-free one on held-out tokens by more than two standard errors of the
    per-token `gain`: with features that predict nothing, a fit that merely chased noise in the fit part would
    otherwise win the held-out comparison about half the time."""
    return len(gain) > 1 and float(gain.mean()) > 2 * float(gain.std()) / len(gain) ** 0.5


def best_fixed_route(losses: Tensor, cost: Tensor, spend: int) -> int:
    """The index of the route with `spend` counted layers (`cost`: (R,) per route) whose mean loss over the tokens of
    `losses` (N, R) is lowest: the fixed route a head falls back to."""
    at_spend = cost == spend  # (R,) the routes of exactly `spend` counted layers
    return int(torch.nonzero(at_spend)[losses[:, at_spend].double().mean(0).argmin()])


def fit_route_router(router: RouteRouter, feats: Tensor, losses: Tensor, holdout: float = 0.25) -> dict:
    """Choose the ridge strength on the last `holdout` of the samples by decision loss, refit on all.

    A fitted W is kept only when its held-out gain over the fixed route (W = 0) is clear (`clear_gain`)."""
    n = int(len(feats) * (1 - holdout))
    scores, per_token = {}, {}
    for lam in RIDGE:
        router.fit(feats[:n], losses[:n], lam)
        per_token[lam] = router.decision_losses(feats[n:], losses[n:]).double()
        scores[lam] = float(per_token[lam].mean())
    inf = float("inf")  # W = 0: the fixed route
    best = min((lam for lam in RIDGE if lam == inf or clear_gain(per_token[inf] - per_token[lam])), key=scores.get)
    router.fit(feats, losses, best)
    fixed = float(losses[n:, losses[:n].mean(0).argmin()].mean())  # the fixed route of the fit part, on the held-out part
    return {
        "ridge": best,
        "holdout_loss": scores[best],
        "holdout_fixed_loss": fixed,
        "ridge_scores": {str(k): v for k, v in scores.items()},
    }


@torch.no_grad()
def set_price(router: RouteRouter, feats: Tensor, spend: float, iters: int = 40) -> float:
    """Set `router.price` so that the tokens' routes spend `spend` counted layers on average (bisection: spending
    falls as the price rises); returns the spending reached. Ends on whichever end of its last bracket is nearer."""
    scores, cost = router.scores(feats), router.cost  # (N, R), (R,)

    def spent(price: float) -> float:
        return float(cost[(scores + price * cost).argmin(-1)].mean())

    lo, hi = -10.0, 10.0  # nats per counted layer
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spent(mid) > spend else (lo, mid)
    router.price.fill_(min((lo, hi), key=lambda p: abs(spent(p) - spend)))
    return spent(float(router.price))


def fit_priced_router(router: RouteRouter, feats: Tensor, losses: Tensor, spend: int, holdout: float = 0.25) -> dict:
    """The priced head: ridge regression of every route's loss (N, R) on the layer-0 states (N, C), the price set so
    that the tokens spend `spend` counted layers on average; the ridge strength chosen on the last `holdout` of the
    tokens, a fit kept only with a clear held-out gain (`clear_gain`) over the fixed route with exactly `spend`
    counted layers, which it becomes otherwise (W = 0, one route of that cost, price 0)."""
    n = int(len(feats) * (1 - holdout))
    fixed_route = best_fixed_route(losses[:n], router.cost, spend)
    fixed = losses[n:, fixed_route].double()  # the fixed route of the fit part, per held-out token
    scores, per_token, spent = {}, {}, {}
    for lam in RIDGE[:-1]:  # the last, inf, is the fixed route
        router.fit(feats[:n], losses[:n], lam)
        set_price(router, feats[n:], spend)  # as at use: priced on the text served (its states, not its labels)
        per_token[lam] = router.decision_losses(feats[n:], losses[n:]).double()
        scores[lam], spent[lam] = float(per_token[lam].mean()), float(router.cost[router.picks(feats[n:])].mean())
    scores[float("inf")], spent[float("inf")] = float(fixed.mean()), float(spend)
    best = min((lam for lam in per_token if clear_gain(fixed - per_token[lam])), key=scores.get, default=float("inf"))
    if best == float("inf"):
        router.weight.zero_()
        router.price.zero_()
        router.bias.fill_(1.0)
        router.bias[fixed_route] = 0.0  # every token takes the fixed route
    else:
        router.fit(feats, losses, best)
        set_price(router, feats, spend)
    return {
        "ridge": best,
        "price": float(router.price),
        "holdout_loss": scores[best],
        "holdout_fixed_loss": scores[float("inf")],
        "ridge_scores": {str(k): v for k, v in scores.items()},
        "holdout_spend": {str(k): v for k, v in spent.items()},
    }

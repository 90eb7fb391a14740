"""The layer-wise oracle-supervised router (ours): the paper router's shape, fitted to the causal oracle.

`routers/route_head.py` plans a token's whole route from its layer-0 state. This one decides layer by layer from the
state u_l the layer sees, as the paper's router does (a `LinearRouter`), but learns from the oracle instead of
through the language-model loss:

- targets: the causal oracle without a budget (`Budget.free`: every route over the two options) picks each
  label token's route and keeps every route's loss for it. The value of the counted choice c (BIG of
  big/small, SKIP of big/skip) at layer l is the token's loss with the other option at l minus its loss with
  c at l, its other layers kept at the oracle's route. Positive: c at l is worth taking.
- features: u_l under the oracle's own routes (a teacher-forced forward), so each layer sees the states that
  the oracle's earlier choices made.
- fit: per layer, ridge regression of the target on u_l; the ridge strength is chosen per layer on held-out
  label tokens by squared error, and a fit is kept only where it clearly beats a constant score (W = 0) there
  (`route.clear_gain`: by more than two standard errors), with the route head's ridge regression and strengths.

With `values="mean"` the targets and features change, to what a router meets at use rather than at the oracle:

- targets: the value of c at layer l averaged over every setting of the token's other layers (the main effect of
  layer l over the 2^L routes: the mean loss of the routes with the other option at l minus that of the routes
  with c at l). At the oracle's route, which is the best for the token's label, every flip costs loss, so the
  flip values above say more about the label's luck than about the token; an average over 2^(L-1) pairs does not
  pick a route by its label.
- features: u_l under a random route per token (each layer c with probability 1/2, seeded), the states of
  random-routing training and of a router that spends about half its layers on c, not the oracle's.

The one calibrated offset then acts as a price per layer of c: a token takes c at every layer where c is worth
more than the price, so the hard tokens take more of it, as the paper router's do (docs/results.md, "Routers and
the label-free bound").

With `--shrink` (`choose_shrink`, `shrink_router`) the mean-target scores are shrunk towards each layer's mean by
the factor with the lowest loss on held-out label tokens, read from the table of every route's loss, or replaced
by the fixed route when no factor beats it clearly. The decisions it scores come from the states under random
routes, not under the router's own (the table holds losses, not states), so its choice is an estimate.

`fit_expected_router` (`--head expected`) keeps the shape and drops the targets: it trains the scores on the
paper router's objective, each token's loss in expectation over the routes its per-layer probabilities draw plus
the budget penalty, the expectation exact over the table of every route's loss rather than through the model.

At use, c's score at layer l is w_l · u_l + b_l + offset and the token takes c where it is positive; the
offset is calibrated (routers/calibrate.py) so that the realised fraction of c meets the budget on average,
as the paper router's does. Causal: u_l of token t depends on tokens ≤ t only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from duollm.routers.linear import LinearRouter
from duollm.routers.route_head import RIDGE, best_fixed_route, clear_gain, ridge
from duollm.routing.budget import Budget


def flip_values(candidates: Tensor, route: Tensor, options: tuple[int, ...], counted: int) -> Tensor:
    """Value (N, L) of `counted` at each layer, the token's other layers kept at its oracle route: its loss with the
    other option at that layer minus its loss with `counted` there (one of the two routes is the oracle's own).

    candidates: (N, R) every token's loss under each route of `Budget.free(options)` (two options, so R = 2^L,
    lexicographic); route: (N, L) the oracle's route of each token."""
    L = route.shape[1]
    hi = (route == options[1]).long()  # (N, L): digit 1 where the route takes the larger option (options ascending)
    place = 2 ** torch.arange(L - 1, -1, -1, device=route.device)  # (L,) a layer's weight in the route index
    idx = (hi * place).sum(1, keepdim=True)  # (N, 1)
    d = options.index(counted)
    with_c = idx + (d - hi) * place  # (N, L): the route with `counted` at layer l
    without = idx + (1 - d - hi) * place
    return candidates.gather(1, without) - candidates.gather(1, with_c)


def mean_values(candidates: Tensor, options: tuple[int, ...], counted: int) -> Tensor:
    """Value (N, L) of `counted` at each layer averaged over the other layers: the mean loss of the routes with the
    other option there minus the mean loss of those with `counted` there. candidates: (N, 2^L), lexicographic over
    `options` (ascending), as `Budget.free(options).routes(L)`."""
    N, R = candidates.shape
    L = R.bit_length() - 1
    by_layer = candidates.reshape(N, *[2] * L)  # axis 1 + l: the digit of layer l (0: options[0], 1: options[1])
    d = options.index(counted)
    means = [by_layer.transpose(1, 1 + l).reshape(N, 2, -1).mean(-1) for l in range(L)]  # (N, 2) per layer
    return torch.stack([m[:, 1 - d] - m[:, d] for m in means], 1)


@torch.no_grad()
def teacher_states(model, ids: Tensor, route: Tensor) -> list[Tensor]:
    """u_l (B·(T-1), C) float32 of the predicting tokens at every layer, the forward following `route` (B, T-1, L)."""
    full = torch.cat([route, route[:, -1:]], 1).to(ids.device)  # the last token predicts nothing: repeat a route
    states = []

    def follow(l: int, u: Tensor) -> Tensor:
        states.append(u[:, :-1].flatten(0, 1).float().cpu())
        return full[..., l]

    model(ids, router=follow)
    return states


def fit_layer_router(
    router: LinearRouter,
    feats: list[Tensor],
    values: Tensor,
    counted: int,
    holdout: float = 0.25,
    table: Tensor | None = None,
    spend: int = 0,
) -> dict:
    """Fit `router`'s score for `counted` at each layer to `values` (N, L) from `feats` (one (N, C) per layer).

    The other option's score stays 0, so the router takes `counted` where the fitted value (plus the calibrated
    offset) is positive. Returns per layer the chosen ridge strength and the held-out squared error of the fit
    and of a constant. With `table` (N, 2^L: every route's loss, as `mean_values` reads it) the scores are then
    shrunk towards each layer's mean by the factor that `choose_shrink` picks with `spend` counted layers a token."""
    k = router.options.index(counted)
    n = int(len(values) * (1 - holdout))
    chosen, err, const, held = [], [], [], []
    for l, X in enumerate(feats):
        X, y = X.double(), values[:, l].double()
        sq, pred = {}, {}  # per held-out token squared error and prediction of each strength
        for lam in RIDGE:
            w, b = ridge(X[:n], y[:n], lam)
            pred[lam] = X[n:] @ w + b
            sq[lam] = (pred[lam] - y[n:]) ** 2
        scores = {lam: float(e.mean()) for lam, e in sq.items()}
        best = min((lam for lam in RIDGE if clear_gain(sq[float("inf")] - sq[lam])), key=scores.get, default=float("inf"))
        w, b = ridge(X, y, best)
        lin = router.layers[l]
        lin.weight.zero_(), lin.bias.zero_()
        lin.weight[k] = w.float()
        lin.bias[k] = float(b)
        chosen.append(best), err.append(scores[best]), const.append(scores[float("inf")]), held.append(pred[best])
    fit = {"ridge": chosen, "holdout_mse": err, "holdout_mse_constant": const}
    if table is not None:
        mean = values[:n].double().mean(0)  # (L,) each layer's mean value on the fit part: what a shrunk score tends to
        fit.update(choose_shrink(torch.stack(held, 1), mean, table[:n], table[n:], router.options, counted, spend))
        shrink_router(router, counted, fit["shrink"], values.double().mean(0), fit.get("fixed_route"))
    return fit


SHRINKS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)  # factors tried on the scores' spread about each layer's mean; 0 = the fixed route


def route_index(take: Tensor, options: tuple[int, ...], counted: int) -> Tensor:
    """(N,) the lexicographic index over `options` (as `Budget.free(options).routes(L)`) of the routes that take
    `counted` where `take` (N, L) is true and the other option elsewhere."""
    L = take.shape[1]
    digit = take.long() if options.index(counted) == 1 else 1 - take.long()
    return (digit * 2 ** torch.arange(L - 1, -1, -1, device=take.device)).sum(1)


def take_top(scores: Tensor, spend: int) -> Tensor:
    """(N, L) bool: `counted` where a score is among the top N · spend of all of them, one global threshold (the
    calibrated offset of a layer head, set on these tokens)."""
    m = scores.shape[0] * spend
    if m == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    flat = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    flat[scores.flatten().topk(m).indices] = True
    return flat.reshape(scores.shape)


def choose_shrink(
    pred: Tensor, mean: Tensor, fit_table: Tensor, held_table: Tensor, options: tuple[int, ...], counted: int, spend: int
) -> dict:
    """The factor s in `SHRINKS` for scores `mean + s · (pred − mean)` that gives the lowest loss on held-out tokens
    when a token takes `counted` at its top-scoring (token, layer) pairs, `spend` a token on average.

    Values averaged over every route are main effects: thresholded layer by layer they ignore that a token's gain
    from one more layer of `counted` falls as it takes more of them, and so they spread a token's count wider than
    pays (at 12 layers, a fifth of the tokens took 0 to 2 BIG layers and lost 0.036 nats against `fixed` there:
    docs/results.md). Shrinking the spread about each layer's mean is one knob between that and the fixed route
    (s = 0: the route of exactly `spend` layers best on the fit part's tokens), chosen by decision loss on the
    table, as the priced head's ridge strength is; a factor is kept only with a clear gain (`clear_gain`) over the
    fixed route. pred: (M, L) the held-out tokens' fitted values; tables: (n, 2^L), (M, 2^L) every route's loss."""
    L = pred.shape[1]
    fixed_route = best_fixed_route(fit_table, route_digits(options, counted, L).sum(1), spend)
    fixed = held_table[:, fixed_route].double()
    per_token = {0.0: fixed}
    for s in SHRINKS[1:]:
        scores = mean + s * (pred.double() - mean)
        per_token[s] = held_table.gather(1, route_index(take_top(scores, spend), options, counted)[:, None])[:, 0].double()
    losses = {s: float(v.mean()) for s, v in per_token.items()}
    best = min((s for s in SHRINKS[1:] if clear_gain(fixed - per_token[s])), key=losses.get, default=0.0)
    out = {"shrink": best, "shrink_losses": {str(s): v for s, v in losses.items()}}
    if best == 0.0:
        out["fixed_route"] = fixed_route
    return out


def shrink_router(router: LinearRouter, counted: int, s: float, mean: Tensor, fixed_route: int | None = None) -> None:
    """Scale each layer's score for `counted` about `mean` (L,), the layer's mean value over the fitted tokens, by
    s: w → s·w, b → s·b + (1 − s)·mean (a ridge fit's unpenalised bias makes its mean score that mean). s = 0 with
    `fixed_route` (a lexicographic index over the options) gives that route to every token instead: scores of +1 on
    its `counted` layers and −1 elsewhere, which any offset between the two keeps."""
    k = router.options.index(counted)
    if fixed_route is not None:
        takes = route_digits(router.options, counted, len(router.layers))[fixed_route]  # (L,) 1 where it takes `counted`
    for l, lin in enumerate(router.layers):
        if fixed_route is not None:
            lin.weight[k].zero_()
            lin.bias[k] = 2 * float(takes[l]) - 1
        else:
            lin.weight[k] *= s
            lin.bias[k] = s * float(lin.bias[k]) + (1 - s) * float(mean[l])


def route_digits(options: tuple[int, ...], counted: int, L: int) -> Tensor:
    """(2^L, L) float: 1 where each route of `Budget.free(options).routes(L)` (lexicographic) takes `counted`."""
    return (Budget.free(options).routes(L) == counted).float()


def expected_loss(scores: Tensor, table: Tensor, digits: Tensor) -> Tensor:
    """(N,) each token's loss averaged over the routes a policy draws: `counted` at layer l with probability
    sigmoid(scores[:, l]), independently, so route R has probability Π_l p_l^D[R,l] (1 − p_l)^(1 − D[R,l]).
    scores: (N, L); table: (N, 2^L) every route's loss; digits: (2^L, L) from `route_digits`."""
    digits = digits.to(scores.dtype)
    logp = F.logsigmoid(scores) @ digits.T + F.logsigmoid(-scores) @ (1 - digits).T  # (N, R) log-probability
    return (logp.exp() * table).sum(1)


def fit_expected_router(
    router: LinearRouter,
    feats: list[Tensor],
    table: Tensor,
    counted: int,
    spend: int,
    steps: int = 300,
    lr: float = 1e-2,
    alpha: float = 10.0,
    batch_size: int = 4096,
    holdout: float = 0.25,
    seed: int = 0,
    margin: float = 4.0,
) -> dict:
    """Train the per-layer scores as the paper trains its router, on the oracle's table instead of the model: minimise
    each token's expected loss over the routes its policy draws (`expected_loss`, exact over all 2^L routes) plus
    alpha · (mean P(counted) − spend/L)², with Adam on mini-batches of the first 1 − `holdout` of the tokens.

    Unlike the mean targets (main effects, one layer at a time), the expectation scores whole routes, so a token
    whose gain from `counted` saturates after a few layers is not pushed to take all of them. The policy starts at
    the fixed route (logits ±`margin`: on the demo model, ±4 learned faster than ±1 or ±2 and than starting from
    P = 1/2 or from the mean targets' fit), so the steps move tokens off it where the table says it pays. The hard router
    (top-scoring (token, layer) pairs, `spend` a token on average, as the calibrated offset does) is scored on the
    held-out tokens every 25 steps and the best step is kept; it is kept only with a clear gain (`clear_gain`) over
    the fixed route of `spend` layers best on the fit part, which every token takes otherwise (`shrink_router`).
    feats: one (N, C) state per layer (from random routes: the table holds losses, not the states of each route)."""
    L, k, dev = len(feats), router.options.index(counted), table.device
    n = int(len(table) * (1 - holdout))
    digits = route_digits(router.options, counted, L).to(dev)
    held = table[n:].double()
    fixed_route = best_fixed_route(table[:n], digits.sum(1), spend)
    fixed = held[:, fixed_route]
    weight = torch.zeros(L, feats[0].shape[1], device=dev, requires_grad=True)
    bias = (margin * (2 * digits[fixed_route] - 1)).requires_grad_()  # start at the fixed route, P = sigmoid(±margin)
    opt = torch.optim.Adam([weight, bias], lr=lr)
    g = torch.Generator().manual_seed(seed)

    def scores(idx: Tensor) -> Tensor:
        return torch.stack([feats[l][idx].float() @ weight[l] + bias[l] for l in range(L)], 1)  # (b, L)

    def held_losses() -> Tensor:
        with torch.no_grad():
            s = scores(torch.arange(n, len(table), device=dev))
            return held.gather(1, route_index(take_top(s, spend), router.options, counted)[:, None])[:, 0]

    best = (float(fixed.mean()), None, 0)  # held-out loss, (weight, bias), step
    curve = []
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g).to(dev)
        s = scores(idx)
        loss = expected_loss(s, table[idx].float(), digits).mean() + alpha * (torch.sigmoid(s).mean() - spend / L) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == steps:
            per_token = held_losses()
            curve.append((step, float(loss.detach()), float(per_token.mean())))
            if float(per_token.mean()) < best[0] and clear_gain(fixed - per_token):
                best = (float(per_token.mean()), (weight.detach().clone(), bias.detach().clone()), step)
    router.cpu()
    with torch.no_grad():
        if best[1] is None:
            shrink_router(router, counted, 0.0, torch.zeros(L), fixed_route)
        else:
            for l, lin in enumerate(router.layers):
                lin.weight.zero_(), lin.bias.zero_()
                lin.weight[k] = best[1][0][l].cpu()
                lin.bias[k] = best[1][1][l].cpu()
    out = {"step": best[2], "holdout_loss": best[0], "holdout_fixed_loss": float(fixed.mean()), "curve": curve}
    if best[1] is None:
        out["fixed_route"] = fixed_route
    return out

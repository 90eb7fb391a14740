"""The `duo-joint` entrant (duollm/methods/joint.py): hand-counted FLOPs, hard choices with a straight-through
gradient, the budget and its calibration, and the entrant rules. Run: pytest tests/methods/test_joint.py"""

import json

import pytest
import torch

from duollm.errors import DuoError
from duollm.methods import build, greedy, load_entrant, save_entrant
from duollm.methods.joint import JointDuo, paper_router_flags
from duollm.routing.route import Choice
from duollm.train.router import parse_target


def joint(cfg, **options) -> JointDuo:
    torch.manual_seed(0)
    return JointDuo(cfg, **options).eval()


def spread_router(model: JointDuo, scale: float = 1.0) -> None:
    """Router weights large enough that tokens disagree clearly (the init's scores are small)."""
    with torch.no_grad():
        for lin in model.router:
            lin.weight.normal_(0, scale)


def choices_seen(model: JointDuo) -> list:
    """The `choice` argument of every RoutedFFN call from now on, in call order (a forward pre-hook per layer)."""
    seen = []
    for block in model.duo.blocks:
        block.ffn.register_forward_pre_hook(lambda mod, args: seen.append(args[1].detach().clone()))
    return seen


def test_flops_against_a_hand_count(cfg):
    # cfg: L=2, d=32, 4 heads (kv 4), d_big=128, d_small=8, V=64
    model = joint(cfg)
    route = torch.tensor([[[0, 2], [1, 1], [2, 2]]], dtype=torch.uint8)  # (1, 3, 2): positions 5, 6, 7
    flops = model.token_flops(route, pos=5)
    d, V = 32, 64
    proj = 2 * d * (4 * d)  # q, k, v, o: d×d each
    ffn = {0: 0, 1: 6 * d * 8, 2: 6 * d * 128}  # SwiGLU: gate, up, down
    router = 2 * d * 3  # d → 3 scores per layer
    for t, p in enumerate((5, 6, 7)):
        attn = proj + 4 * d * (p + 1)  # scores and weighted sum over p + 1 keys
        want = 2 * attn + sum(ffn[int(c)] for c in route[0, t]) + 2 * router + 2 * d * V
        assert flops[0, t].item() == want
    assert flops.dtype == torch.float64


def test_forward_flops_average_to_the_cost_tables(cfg, ids):
    model = joint(cfg)
    spread_router(model)
    seen = choices_seen(model)
    out = model(ids)
    route = torch.stack(seen, -1)  # (B, T, L) uint8: what ran
    table = cfg.cost(ids.shape[1])
    ffn = table.ffn[torch.arange(cfg.n_layer), route.long()].sum(-1)  # (B, T)
    want = ffn + table.attn.sum() + table.head + 2 * cfg.d_model * 3 * cfg.n_layer
    assert out.flops.mean().item() == pytest.approx(want.mean().item())
    assert out.flops.shape == ids.shape


def test_choices_are_hard_in_training_and_at_evaluation(cfg, ids):
    model = joint(cfg)
    spread_router(model)
    seen = choices_seen(model)
    model.train()
    train_logits = model(ids).logits
    for w in seen:  # (B, T, 3) straight-through weights: one-hot in value
        assert w.shape == (*ids.shape, 3) and w.is_floating_point()
        assert set(w.unique().tolist()) <= {0.0, 1.0} and torch.equal(w.sum(-1), torch.ones(ids.shape))
    hard = [w.argmax(-1) for w in seen]
    seen.clear()
    model.eval()
    out = model(ids)
    for h, c in zip(hard, seen, strict=True):  # (B, T) uint8 under eval(): the same choices, one of three values
        assert c.dtype == torch.uint8 and set(c.unique().tolist()) <= {0, 1, 2}
        assert torch.equal(c.long(), h)
    assert len(torch.cat(seen).unique()) == 3  # the spread router uses all three choices
    assert torch.allclose(train_logits, out.logits, atol=1e-5)  # one-hot weights: the chosen module's output only
    assert sum(out.stats[k] for k in ("skip", "small", "big")) == pytest.approx(1.0)


def test_without_skip_no_token_skips(cfg, ids):
    model = joint(cfg, skip=False, budget=0.5)
    spread_router(model)
    model.price.fill_(-50.0)  # a price that would make every token skip if it could
    seen = choices_seen(model)
    model(ids)
    assert all((c == Choice.SMALL).all() for c in seen)


def test_the_router_gets_a_gradient_from_the_language_model_loss_and_from_the_budget(cfg, ids):
    model = joint(cfg, alpha=0.0).train()  # the language-model loss alone
    model(ids, targets=ids).loss.backward()
    assert all(lin.weight.grad.abs().sum() > 0 for lin in model.router)
    model = joint(cfg, budget=0.1).train()  # the budget term alone
    model(ids).aux.backward()
    assert all(lin.weight.grad.abs().sum() > 0 for lin in model.router)


def test_aux_is_the_budget_penalty_on_the_realised_cost(cfg, ids):
    model = joint(cfg, budget=0.4, alpha=3.0)
    spread_router(model)
    seen = choices_seen(model)
    out = model(ids)
    route = torch.stack(seen, -1).long()  # (B, T, L)
    ffn = cfg.cost().ffn
    cost = (ffn[torch.arange(cfg.n_layer), route].sum(-1) / ffn[:, Choice.BIG].sum()).mean().item()
    assert out.stats["cost"] == pytest.approx(cost, abs=1e-6)
    assert out.aux.item() == pytest.approx(3.0 * (cost - 0.4) ** 2, rel=1e-4)
    model.train()
    assert model(ids).stats["cost"] == pytest.approx(cost, abs=1e-6)  # training spends what evaluation spends


def test_causal_under_eval(cfg, ids):
    model = joint(cfg)
    spread_router(model)
    later = ids.clone()
    later[:, 10:] = (later[:, 10:] + 7) % cfg.vocab_size
    a, b = model(ids), model(later)
    assert torch.allclose(a.logits[:, :10], b.logits[:, :10], atol=1e-6)
    assert torch.equal(a.flops[:, :10], b.flops[:, :10])


def test_decoding_equals_the_full_forward(cfg, ids):
    model = joint(cfg)
    spread_router(model)
    full = model(ids)
    cache = model.new_cache(ids.shape[0], ids.shape[1])
    steps = [model(ids[:, :4], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(4, ids.shape[1])]
    assert torch.allclose(torch.cat([s.logits for s in steps], 1), full.logits, atol=1e-5)
    assert torch.equal(torch.cat([s.flops for s in steps], 1), full.flops)  # the same decisions, the same count
    seq = greedy(model, ids[:, :5], 6)
    for t in range(5, seq.shape[1]):
        assert torch.equal(model(seq[:, :t]).logits[:, -1].argmax(-1), seq[:, t])


def test_save_and_load_round_trip(cfg, ids, tmp_path):
    model = build("duo-joint", cfg, budget=0.33, skip=False, alpha=5.0)
    spread_router(model)
    model.price.fill_(0.7)  # calibration travels with the weights
    save_entrant(model, tmp_path)
    back = load_entrant(tmp_path).eval()
    assert json.loads(json.dumps(back.options)) == {"budget": 0.33, "skip": False, "alpha": 5.0, "tau": 1.0}
    assert back.price.item() == pytest.approx(0.7)
    assert torch.equal(back(ids).logits, model.eval()(ids).logits)


def test_bad_options_are_named(cfg):
    with pytest.raises(DuoError, match="budget"):
        build("duo-joint", cfg, budget=0.05, skip=False)  # below all-SMALL's 1/16
    with pytest.raises(DuoError, match="budget"):
        build("duo-joint", cfg, budget=1.5)
    with pytest.raises(DuoError, match="capacity"):
        build("duo-joint", cfg, capacity=0.5)


def test_training_on_a_fixed_batch_lowers_the_loss_and_moves_the_cost_to_the_budget(cfg):
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, cfg.vocab_size, (4, 17), generator=gen)
    model = joint(cfg, budget=0.1, alpha=10.0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    first = model(x[:, :-1], targets=x[:, 1:])
    for _ in range(15):
        out = model(x[:, :-1], targets=x[:, 1:])
        opt.zero_grad()
        (out.loss + out.aux).backward()
        opt.step()
    last = model(x[:, :-1], targets=x[:, 1:])
    assert last.loss.item() < first.loss.item() - 0.5
    assert abs(last.stats["cost"] - 0.1) < abs(first.stats["cost"] - 0.1) / 2


def test_calibration_meets_the_budget(cfg):
    windows = torch.randint(0, cfg.vocab_size, (8, 16), generator=torch.Generator().manual_seed(4))
    model = joint(cfg, budget=0.6)
    spread_router(model)
    before = model.realised_cost(windows)
    got = model.calibrate(windows, batch_size=8, iters=14)
    assert abs(got - 0.6) <= 0.02 and got == pytest.approx(model.realised_cost(windows))
    assert abs(before - 0.6) > 0.02  # calibration had work to do
    assert not model.training  # the joint() fixture's mode is kept
    model.price.add_(1.0)
    assert model.realised_cost(windows) >= got  # a higher price of compute never spends less


@pytest.mark.parametrize("skip", [False, True])
def test_paper_router_flags_spend_the_same_cost(cfg, skip):
    model = joint(cfg, budget=0.5, skip=skip)
    flags = paper_router_flags(model)
    budget, options = flags[flags.index("--budget") + 1], flags[flags.index("--options") + 1]
    target = parse_target(budget, options)  # the paper router's own parser accepts them
    r = 8 / 128  # SMALL's cost relative to BIG's
    assert target[Choice.BIG] + r * target[Choice.SMALL] == pytest.approx(0.5, abs=1e-3)
    assert (Choice.SKIP in target) == skip
    shares = {"big": 0.4, "small": 0.3, "skip": 0.3}
    if skip:
        assert paper_router_flags(model, shares)[3] == "0.4000,0.3000,0.3000"

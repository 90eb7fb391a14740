"""The seven claims' rules (analysis/claims.py) on hand-made numbers and routes. Run: pytest tests/analysis/test_claims.py"""

import json
import shutil

import numpy as np
import pytest

from duollm.analysis import claims as C
from duollm.analysis.table import BIG, SKIP, SMALL


def summary(curve, mode="shared", **rows):
    """An oracle summary whose oracle ppl at k is curve[k], plus rows for other labels."""
    budgets = [{"k": k, "ppl_oracle": p} for k, p in enumerate(curve)] + [{"k": k, "ppl_oracle": p} for k, p in rows.items()]
    return {"mode": mode, "n_layer": len(curve) - 1, "ppl_all_big": curve[-1], "budgets": budgets}


def test_claims_1_and_2_follow_the_curve():
    u = summary([80, 60, 55, 54, 58, 62, 70])  # L = 6, minimum at k = 3 = L/2
    assert C.claim_1(u)["verdict"] == C.HOLDS and C.claim_2(u, 6)["verdict"] == C.HOLDS
    far = summary([80, 50, 55, 56, 58, 62, 70])  # interior minimum at k = 1, two layers from L/2
    assert C.claim_2(far, 6)["verdict"] == C.PARTLY
    falling = summary([80, 75, 72, 70, 69, 68, 67])  # no interior minimum; k = 1 (75) is worse than all-big (67)
    assert C.claim_2(falling, 6)["verdict"] == C.FAILS and C.claim_1(falling)["verdict"] == C.FAILS
    gap = {"mode": "shared", "n_layer": 6, "ppl_all_big": 70, "budgets": [{"k": 0, "ppl_oracle": 80}]}
    assert C.claim_2(gap, 6)["verdict"] == C.MISSING and C.claim_1(gap)["verdict"] == C.MISSING


def test_causal_numbers_come_from_their_own_key():
    s = {
        "mode": "causal",
        "n_layer": 2,
        "ppl_all_big": 9.0,
        "budgets": [{"k": 1, "ppl_oracle": 8.0, "ppl_oracle_shared": 7.0, "ppl_oracle_causal": 8.0}],
    }
    c1 = C.claim_1(s)
    assert c1["ppl_oracle_k1"] == 7.0 and c1["ppl_causal_k1"] == 8.0


def routes_with_big_at(layers, L=12, n=50):
    r = np.full((n, 3, L), SMALL, dtype=np.uint8)
    r[..., list(layers)] = BIG
    return r


def test_claim_3_wants_depth_to_fall_across_one_half():
    late, uniform, early = routes_with_big_at(range(8, 12)), routes_with_big_at(range(0, 12, 2)), routes_with_big_at(range(0, 8))
    assert C.claim_3({4: late, 6: uniform, 8: early})["verdict"] == C.HOLDS
    assert C.claim_3({4: early, 6: uniform, 8: late})["verdict"] == C.FAILS
    earlier_all_along = {4: routes_with_big_at(range(4, 8)), 6: routes_with_big_at(range(2, 8)), 8: routes_with_big_at(range(8))}
    assert C.claim_3(earlier_all_along)["verdict"] == C.PARTLY  # depth 0.50 → 0.41 → 0.32: falls, never above 0.5
    assert (
        C.claim_3({4: routes_with_big_at(range(4)), 6: routes_with_big_at(range(6)), 8: routes_with_big_at(range(8))})["verdict"] == C.FAILS
    )


def test_claim_4_thresholds():
    near = {"k": 6, "router": 60.0, "random_best": 61.0, "causal_oracle": 50.0}
    assert C.claim_4([near])["verdict"] == C.HOLDS
    better = {"k": 4, "router": 52.0, "random_best": 61.0, "causal_oracle": 50.0}  # far better than random
    assert C.claim_4([near, better])["verdict"] == C.PARTLY and C.claim_4([better])["verdict"] == C.FAILS
    assert C.claim_4([])["verdict"] == C.MISSING


def test_claim_5_pairs_each_schedule_with_its_mean():
    s = summary([80, 60, 55, 54, 58, 62, 70], **{"4>2": 56.0, "5>2": 50.0})  # 5>2 has no whole mean: ignored
    res = C.claim_5(C.by_k(s))
    assert res["verdict"] == C.HOLDS and res["pairs"] == [{"schedule": "4>2", "constant": 3, "ppl_schedule": 56.0, "ppl_constant": 54}]
    assert C.claim_5(C.by_k(summary([80, 60, 55, 54, 58, 62, 70], **{"4>2": 53.0})))["verdict"] == C.FAILS
    assert C.claim_5(C.by_k(summary([80, 60, 55, 54, 58, 62, 70], **{"4>2": 59.0})))["verdict"] == C.HOLDS


def test_claim_6_counts_skips_that_end_the_stack():
    L, s = 6, 3
    exit_ = np.full((10, 4, L), BIG, dtype=np.uint8)
    exit_[..., 3:] = SKIP
    assert C.early_exit_share(exit_, s) == 1.0 and C.claim_6(exit_, s)["verdict"] == C.FAILS
    spread = exit_.copy()
    spread[:6] = BIG
    spread[:6, :, ::2] = SKIP  # layers 0, 2, 4 skipped: not an exit
    assert C.early_exit_share(spread, s) == pytest.approx(0.4) and C.claim_6(spread, s)["verdict"] == C.HOLDS


def test_a_bare_run_gives_seven_unmeasured_claims_and_claim_7_reads_the_freeze_files(tmp_path):
    (tmp_path / "out").mkdir()
    for name, ppl in (("scratch", 40.0), ("frozen", 55.0)):
        rows = [{"policy": p, "ppl": ppl + i} for i, p in enumerate(("all-big", "random:0.5", "all-small"))]
        (tmp_path / "out" / f"freeze-{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = C.claims(tmp_path, tmp_path / "out")
    assert [c["claim"] for c in res] == list(range(1, 8))
    assert all(c["verdict"] == C.MISSING for c in res[:6]) and res[6]["verdict"] == C.HOLDS
    assert res[6]["scratch"]["random:0.5"] == 41.0


def test_cli_writes_claims_json(tmp_path, capsys):
    from tests.conftest import run_cli

    code, out, _ = run_cli(capsys, "claims", "--run", str(tmp_path), "--json")
    assert code == 0 and len(json.loads(out)) == 7
    assert len(json.loads((tmp_path / "claims.json").read_text())) == 7


def test_claim_4_wants_random_best_of_n_at_the_routers_budget(run_dir):
    """An oracle run with --random-budgets that leave out the paper router's budget: claim 4 is unmeasured there,
    not a crash."""
    assert C.claims(run_dir)[3]["verdict"] != C.MISSING  # claim 4
    path = run_dir / "oracle" / "big-small" / "summary.json"
    s = json.loads(path.read_text())
    for b in s["budgets"]:
        b["ppl_random_best"] = None
    path.write_text(json.dumps(s))
    assert C.claims(run_dir)[3]["verdict"] == C.MISSING


def test_a_sweep_cut_short_still_gives_claims_1_2_and_5(run_dir):
    """Only the partial summary of a cut sweep (no folder yet): claims 1, 2, 5 from it, marked; 3 unmeasured."""
    full = C.claims(run_dir)
    folder = run_dir / "oracle" / "big-small"
    s = json.loads((folder / "summary.json").read_text())
    for b in s["budgets"]:
        b["ppl_random_best"] = None  # cut before the random phase
    (run_dir / "oracle" / "big-small.partial-summary.json").write_text(json.dumps({**s, "partial": "up to causal"}))
    shutil.rmtree(folder)
    cut = C.claims(run_dir)
    for n in (1, 2, 5):
        assert cut[n - 1]["verdict"] == full[n - 1]["verdict"] and "up to causal" in cut[n - 1]["partial"]
    assert cut[2]["verdict"] == C.MISSING and cut[3]["verdict"] == C.MISSING  # claim 3 needs the table; 4 random best-of-N


def test_route_groups_move_the_budgets_claims_read():
    from duollm.analysis.claims import claim_1, claim_2
    from duollm.analysis.table import group_counts, usage_ks

    assert group_counts(30, 3) == list(range(0, 31, 3))
    assert group_counts(12, 5) == [0, 2, 5, 7, 10, 12]
    assert usage_ks(30, 3) == [9, 15, 21] and usage_ks(12) == [4, 6, 8] and usage_ks(30) == [10, 15, 20]
    # a 6-layer oracle over groups of 3: one group BIG is k = 3; every reachable count is 0, 3, 6
    rows = [{"k": 0, "ppl_oracle": 9.0}, {"k": 3, "ppl_oracle": 5.0}, {"k": 6, "ppl_oracle": 7.0}]
    summary = {"mode": "shared", "n_layer": 6, "groups": 3, "ppl_all_big": 7.0, "budgets": rows}
    one = claim_1(summary)
    assert one["verdict"] == "holds" and one["ppl_oracle_k3"] == 5.0 and one["groups"] == 3
    two = claim_2(summary, 6)
    assert two["verdict"] == "holds" and two["k_min"] == 3
    assert claim_2({**summary, "groups": 1}, 6)["verdict"] == "not measured"  # ungrouped, it needs k = 0..6
    assert claim_1({**summary, "ppl_all_big": 4.0})["verdict"] == "does not hold"

"""The router comparison table of docs/results.md, from a run's saved oracle summaries and router evals.

    python3 scripts/router_table.py RUN prose-val=RUN/oracle/big-small code-val=RUN/oracle-code/big-small

For each split and each budget k with an evaluated router: all-small, all-big, fixed, best-of-N random, the
paper and supervised routers, the causal and shared oracles (perplexity), and each router's gap recovered
= (ppl_fixed − ppl_router) / (ppl_fixed − ppl_causal_oracle) and realised fraction of the counted choice.
Reads files only (no model).
"""

import json
import sys
from pathlib import Path


def fmt(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def main(run: str, pairs: list[str]) -> None:
    evals = []
    for f in sorted(Path(run).glob("routers/*/eval-*.json")):
        e = json.loads(f.read_text())
        head = json.loads((f.parent / "router.json").read_text()).get("config", {}).get("head", "route")
        e["column"] = "layer" if head == "layer" else e["kind"]  # the layer-head supervised router, its own column
        e["split"] = Path(e.get("split", "")).name.removesuffix(".jsonl")  # a path or a split's name
        evals.append(e)
    for pair in pairs:
        split, folder = pair.split("=", 1)
        s = json.loads((Path(folder) / "summary.json").read_text())
        print(
            f"\n{split}: {s['seqs']} windows × {s['seq_len']} tokens ({s['tokens']:,} predicted), {s['n_layer']} layers, random best-of-{s['random']}\n"
        )
        print(
            "| k | all-small | all-big | fixed | random best | paper router | supervised router | causal oracle | shared oracle | gap recovered paper / supervised | realised paper / supervised |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        later = []
        for row in s["budgets"]:
            got = {
                e["column"]: e
                for e in evals
                if e["split"] == split and str(e.get("k")) == str(row["k"]) and set(e["target"]) == set(s["options"].split(","))
            }
            if not got:
                continue
            p, q = got.get("paper"), got.get("supervised")
            counted = "big" if s["options"] == "big,small" else "skip"
            cells = [row["k"], fmt(s["ppl_all_small"]), fmt(s["ppl_all_big"]), fmt(row["ppl_fixed"]), fmt(row["ppl_random_best"])]
            cells += [fmt(p and p["ppl"]), fmt(q and q["ppl"]), fmt(row.get("ppl_oracle_causal")), fmt(row["ppl_oracle_shared"])]
            cells += [f"{fmt(p and p['gap_recovered'], 3)} / {fmt(q and q['gap_recovered'], 3)}"]
            cells += [f"{fmt(p and p['realized'][counted], 3)} / {fmt(q and q['realized'][counted], 3)}"]
            print("| " + " | ".join(str(c) for c in cells) + " |")
            if "layer" in got:
                later.append(
                    f"{split}, k = {row['k']}: {got['layer']['name']} (layer head) ppl {fmt(got['layer']['ppl'])}, gap recovered {fmt(got['layer']['gap_recovered'], 3)}, realised {fmt(got['layer']['realized'][counted], 3)}"
                )
        if later:
            print("\n" + "\n".join(later))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

"""The arena's tables in markdown, from a folder's arena.jsonl (docs/results.md, docs/arena.md):

    python scripts/arena_table.py docs/study/arena

1. every entrant: perplexity per split (mean ± standard error over seeds), FLOPs per token, compute, FFN share, target
   (`duollm arena`'s table);
2. every entrant of another method against the dense entrant of nearest compute: the paired difference in held-out
   loss per split (analysis/arena.py `paired`);
3. the timings of every timed row (`--speed`) and their ratios to the dense row of nearest compute timed in the same
   pass (`speed_ratios`).
"""

import argparse

from duollm.analysis.arena import read_arena, speed_ratios
from duollm.cli.arena import format_paired, format_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    a = p.parse_args()
    rows = read_arena(a.folder)
    print(format_table(rows))
    print("\n" + format_paired(rows))
    print(
        "\n| entrant | seed | weights | pass | train tok/s | prefill tok/s | decode tok/s b1 | decode tok/s b64 | against | train | prefill | decode b1 | decode b64 |"
    )
    print("|" + "---|" * 13)
    ratios = {(r["label"], r["seed"]): r for r in speed_ratios(rows)}
    for r in rows:
        if not r.get("prefill_tokens_per_s"):
            continue
        q = ratios.get((r["label"], r["seed"]), {})
        fmt = lambda v, f=",.0f": "-" if v is None else format(v, f)  # noqa: E731
        vals = [r["label"], r["seed"], r.get("speed_weights", "-"), r.get("speed_pass", "-")[-8:]]
        vals += [
            fmt(r.get(k)) for k in ("speed_train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s", "decode_tokens_per_s_b64")
        ]
        vals += [q.get("baseline", "-")] + [
            fmt(q.get(k), ".2f")
            for k in ("speed_train_tokens_per_s", "prefill_tokens_per_s", "decode_tokens_per_s", "decode_tokens_per_s_b64")
        ]
        print("| " + " | ".join(str(v) for v in vals) + " |")


if __name__ == "__main__":
    main()

"""The arena's table and figure, from `arena.jsonl` alone (train/arena.py writes it; docs/arena.md).

    rows = read_arena("runs/arena")              # one dict per entrant and seed
    points = summarize(rows)                      # one per entrant: means over its seeds, standard errors
    plot_pareto(points, ax_flops, ax_time)        # perplexity against FLOPs per token, and against decode time

Imports no torch: the report draws these from the saved rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from duollm.analysis.page import Page, esc, new_figure, num
from duollm.errors import DuoError
from duollm.files import atomic_path

ARENA_FILE = "arena.jsonl"
SPEED_KEY = "decode_tokens_per_s"  # measured greedy decoding at batch 1, when a row carries it
TIMINGS = ("speed_train_tokens_per_s", "prefill_tokens_per_s", SPEED_KEY, "decode_tokens_per_s_b64")  # arena --speed


def read_arena(folder: str | Path) -> list[dict]:
    """The rows of `folder/arena.jsonl`; DuoError when it is missing or holds a line that is not a row."""
    path = Path(folder) / ARENA_FILE
    if not path.is_file():
        raise DuoError(f"{path} not found: run `duollm arena --out {folder}` first")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or not {"label", "seed", "ppl", "flops_per_token"} <= row.keys():
                raise DuoError(f"{path}:{i} is not an arena row; run duollm arena again")
            rows.append(row)
    return rows


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def summarize(rows: list[dict]) -> list[dict]:
    """One point per entrant label, in order of appearance: seeds, mean perplexity per split with its standard error
    (None for one seed), mean FLOPs per token, compute, FFN share, target, the --speed timings (`TIMINGS`) over the
    seeds that carry them (None where none does), and `family`: the label of the entrant whose training it shares
    (its own when it trained itself), which evaluations of one training, such as an exit method's thresholds, have
    in common."""
    out = []
    for lab in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == lab]
        p = {"label": lab, "method": mine[0]["method"], "seeds": sorted(r["seed"] for r in mine), "ppl": {}, "ppl_se": {}}
        p["family"] = mine[0].get("shared_training") or lab  # the entrant whose training it evaluates (itself, mostly)
        for split in mine[0]["ppl"]:
            p["ppl"][split], p["ppl_se"][split] = _mean_se([r["ppl"][split] for r in mine])
        for key in ("flops_per_token", "compute", "ffn_share", "tokens_per_s", "train_tokens", "params"):
            p[key] = _mean_se([r[key] for r in mine])[0] if all(key in r for r in mine) else None
        p["target"] = mine[0].get("target")
        for key in TIMINGS:  # over the seeds that were timed (a speed pass may time one seed of an entrant)
            timed = [r[key] for r in mine if r.get(key)]
            p[key] = _mean_se(timed)[0] if timed else None
        out.append(p)
    return out


def baselines(rows: list[dict], method: str = "dense") -> set[str]:
    """The labels of the plain `method` entrants: dense models of some width, without a training-free policy on top
    (`skipllm`), which are entrants to compare like any other."""
    return {r["label"] for r in rows if r["method"] == method and not r.get("options", {}).get("skipllm")}


def paired(rows: list[dict], baseline: str = "dense") -> list[dict]:
    """Each entrant but the plain `baseline` ones (`baselines`) against the plain one of nearest mean `compute` (the
    dense model of equal FLOPs): per split, the mean over the seeds both have of the difference in held-out loss (nats per
    token; above 0: worse than the baseline) and its paired standard error over those seeds (None for one seed).
    Seed s of every entrant starts from the same init seed and sees the same batches, so the pairs share both."""
    points = {p["label"]: p for p in summarize(rows)}
    base_labels = baselines(rows, baseline)
    bases = [points[b] for b in base_labels]
    out = []
    for p in points.values():
        if p["label"] in base_labels or not bases:
            continue
        base = min(bases, key=lambda b: abs(b["compute"] - p["compute"]))
        mine = {r["seed"]: r for r in rows if r["label"] == p["label"]}
        theirs = {r["seed"]: r for r in rows if r["label"] == base["label"]}
        seeds = sorted(set(mine) & set(theirs))
        if not seeds:
            continue
        diff, se = {}, {}
        for split in p["ppl"]:
            diff[split], se[split] = _mean_se([mine[s]["loss"][split] - theirs[s]["loss"][split] for s in seeds])
        out.append(
            {
                "label": p["label"],
                "baseline": base["label"],
                "seeds": seeds,
                "compute": p["compute"],
                "baseline_compute": base["compute"],
                "diff": diff,
                "se": se,
            }
        )
    return out


def speed_ratios(rows: list[dict], baseline: str = "dense") -> list[dict]:
    """Each timed row against the `baseline` method's row of nearest `compute` timed in the same pass (the same
    `speed_pass`, one process): its training, prefill and decode tokens/s over the baseline's."""
    out = []
    for r in rows:
        if not r.get("prefill_tokens_per_s"):
            continue
        plain = baselines(rows, baseline)
        same = [b for b in rows if b["label"] in plain and b.get("prefill_tokens_per_s") and b.get("speed_pass") == r.get("speed_pass")]
        if not same:
            continue
        base = min(same, key=lambda b: (abs(b["compute"] - r["compute"]), b["seed"]))
        ratio = {k: (r[k] / base[k] if r.get(k) and base.get(k) else None) for k in TIMINGS}
        out.append({"label": r["label"], "seed": r["seed"], "baseline": base["label"], "speed_pass": r.get("speed_pass"), **ratio})
    return out


def pareto(points: list[dict], x: str, split: str) -> list[dict]:
    """The points no other beats on both `x` (lower is better) and perplexity on `split`, by increasing x."""
    front, best = [], math.inf
    for p in sorted((p for p in points if p.get(x) is not None), key=lambda p: (p[x], p["ppl"][split])):
        if p["ppl"][split] < best:
            front.append(p)
            best = p["ppl"][split]
    return front


def _color(j: int) -> str:
    """The j-th entrant's color: tab20's pairs, dark shades first, so that up to 20 entrants differ."""
    import matplotlib  # the analysis extra, imported when a figure is drawn (as page.py imports Figure)

    return matplotlib.colors.to_hex(matplotlib.colormaps["tab20"]((2 * j) % 20 + (j // 10) % 2))


def _panel(points: list[dict], ax, x: str, scale: float, xlabel: str, splits: list[str]):
    markers = ("o", "s")
    families = {f: [p for p in points if p["family"] == f] for f in dict.fromkeys(p["family"] for p in points)}
    for i, (split, marker) in enumerate(zip(splits, markers, strict=False)):
        for family, members in families.items():  # one color per training (`p["color"]`, the same in both panels)
            for k, p in enumerate(members):  # the legend names a training once, with its number of evaluations
                more = f" (+{len(members) - 1} evaluations)" if len(members) > 1 else ""
                label = family + more if i == 0 and k == 0 else None
                se = p["ppl_se"][split]
                ax.errorbar(p[x] * scale, p["ppl"][split], yerr=se, fmt=marker, color=p["color"], ms=6, capsize=2, label=label)
            if len(members) > 1:  # the front of one training's evaluations: an exit method's frontier as its threshold varies
                line = pareto(members, x, split)
                ax.plot([p[x] * scale for p in line], [p["ppl"][split] for p in line], "-", color=members[0]["color"], lw=0.8)
        front = pareto(points, x, split)
        ax.plot([p[x] * scale for p in front], [p["ppl"][split] for p in front], ":", color="gray", lw=1)
    ax.legend(fontsize=7)
    ppls = [p["ppl"][s] for p in points for s in splits]
    if max(ppls) > 3 * min(ppls):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("perplexity")
    ax.grid(alpha=0.3)


def plot_pareto(points: list[dict], ax_flops, ax_time):
    """Left: perplexity against forward FLOPs per token (circles: the first split, squares: the second; dotted: each
    split's Pareto front; a solid line, in its color, is the front of one training's evaluations, such as an exit
    method's thresholds). Right: against measured decode time per token, or a note that no row carries it."""
    splits = list(points[0]["ppl"])
    families = list(dict.fromkeys(p["family"] for p in points))
    for p in points:  # the evaluations of one training share its color
        p["color"] = _color(families.index(p["family"]))
    _panel(points, ax_flops, "flops_per_token", 1e-6, "forward MFLOP per token", splits)
    ax_flops.set_title(f"perplexity ({' ○, '.join(splits)} □) against FLOPs", fontsize=9)
    timed = [p for p in points if p[SPEED_KEY]]
    if timed:
        for p in timed:
            p["ms_per_token"] = 1e3 / p[SPEED_KEY]
        _panel(
            timed, ax_time, "ms_per_token", 1.0, "greedy decode ms per token (batch 1, measured; compare within one --speed pass)", splits
        )
        ax_time.set_title("against measured decode time", fontsize=9)
    else:
        ax_time.text(0.5, 0.5, "no decode timings in these rows:\nmeasure with duollm arena --speed", ha="center", va="center", fontsize=9)
        ax_time.set_axis_off()
    return ax_flops


def params_m(n: float | None) -> str:
    """A parameter count in millions, `-` where the rows do not carry it: the unique parameters, so a recursive
    model's shared stack counts once however often it runs (compare its FLOPs per token beside it)."""
    return "-" if n is None else f"{n / 1e6:.2f}"


def arena_table(points: list[dict]) -> str:
    """Every entrant as an HTML table row: perplexities (± standard error over seeds), FLOPs, compute, target."""
    splits = list(points[0]["ppl"])
    head = ["entrant", "seeds", *(f"ppl {s}" for s in splits), "MFLOP/token", "of dense BIG", "FFN share", "target"]
    head += ["train tokens/s", "parameters (M)"]
    rows = ["<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for p in points:
        ppl = [num(p["ppl"][s]) + (f" ± {p['ppl_se'][s]:.2f}" if p["ppl_se"][s] is not None else "") for s in splits]
        vals = [len(p["seeds"]), *ppl, num(p["flops_per_token"] / 1e6, ".3f"), num(p["compute"], ".1%")]
        vals += [num(p["ffn_share"], ".3f"), num(p["target"], ".3f"), num(p["tokens_per_s"], ",.0f"), params_m(p["params"])]
        rows.append(f'<tr><td class="l">{esc(p["label"])}</td>' + "".join(f"<td>{esc(str(v))}</td>" for v in vals) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


CAPTION = (
    "Held-out perplexity against forward FLOPs per token (left) and measured decode time (right), one point per "
    "entrant (mean over seeds, bars: standard error over seeds)."
)


def arena_figure(points: list[dict]):
    """The two-panel Pareto figure (a matplotlib Figure)."""
    fig = new_figure(11, 4.2)
    ax_flops, ax_time = fig.subplots(1, 2)
    plot_pareto(points, ax_flops, ax_time)
    fig.tight_layout()
    return fig


def write_arena_figure(folder: str | Path) -> Path:
    """`folder/arena.png` from `folder/arena.jsonl`, written atomically; its path."""
    path = Path(folder) / "arena.png"
    fig = arena_figure(summarize(read_arena(folder)))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def paired_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """`paired` as a header and rows of text cells (none when nothing pairs), for the CLI's markdown and the
    report's HTML: each entrant's difference in held-out loss from the plain dense entrant of nearest FLOPs, ± the
    paired standard error over seeds."""
    pairs = paired(rows)
    splits = list(pairs[0]["diff"]) if pairs else []
    head = ["entrant", "compute", "against", "its compute", "seeds", *(f"Δ loss {s} (nats)" for s in splits)]
    body = []
    for d in pairs:
        cells = [f"{d['diff'][s]:+.3f}" + (f" ± {d['se'][s]:.3f}" if d["se"][s] is not None else "") for s in splits]
        seeds = ",".join(map(str, d["seeds"]))
        body.append([d["label"], f"{d['compute']:.1%}", d["baseline"], f"{d['baseline_compute']:.1%}", seeds, *cells])
    return head, body


def paired_table(rows: list[dict]) -> str:
    """`paired_cells` as an HTML table, "" when nothing pairs."""
    head, body = paired_cells(rows)
    if not body:
        return ""
    out = ["<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for label, *vals in body:
        out.append(f'<tr><td class="l">{esc(label)}</td>' + "".join(f"<td>{esc(v)}</td>" for v in vals) + "</tr>")
    return "<table>" + "".join(out) + "</table>"


def arena_section(page: Page, folder: str | Path) -> None:
    """The report's arena section: the tables and the figure of `folder/arena.jsonl`."""
    page.add("<h2>Arena</h2>")
    rows = read_arena(folder)
    points = summarize(rows)
    page.add(f"<p>{len(points)} entrants; command: <code>duollm arena --out {esc(str(folder))}</code> (docs/arena.md).</p>")
    page.add(arena_table(points))
    pairs = paired_table(rows)
    if pairs:
        page.add("<p>Against the plain dense entrant of nearest FLOPs, paired by seed (above 0: worse):</p>" + pairs)
    page.figure(arena_figure(points), "arena.png", CAPTION)

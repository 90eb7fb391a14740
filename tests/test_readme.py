"""First contact: the README's two set-up commands are what CI runs, they install through the tested pins and
everything the demo needs, and the README's copy of the demo's output is checked against the demo.
Run: pytest tests/test_readme.py"""

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
readme_commands = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_commands)

README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def pins() -> dict[str, str]:
    lines = [ln.strip() for ln in (ROOT / "constraints.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.+\-]*", ln) for ln in lines), "every line pins one version"
    return {requirement_name(ln): ln.split("==")[1] for ln in lines}


def test_ci_runs_the_readme_commands_it_extracts():
    ci = (ROOT / ".ci" / "run").read_text()
    for step in ("scripts/readme_commands.py demo", "scripts/readme_commands.py test", "scripts/readme_commands.py check"):
        assert step in ci
    code = "\n".join(line for line in ci.splitlines() if not line.lstrip().startswith("#"))
    assert "pip install" not in code and "pytest" not in code  # nothing of its own that could drift from the README
    cmds = readme_commands.commands(README)
    assert cmds["demo"].endswith("&& duollm demo") and "data fetch" not in cmds["demo"]  # the books ship in the package
    assert "python -m pytest" in cmds["test"]


@pytest.mark.parametrize("which", ["demo", "test"])
def test_readme_commands_install_through_the_pins_in_a_fresh_venv(which):
    cmd = readme_commands.commands(README)[which]
    assert cmd.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")
    install = cmd.split("&&")[2]
    assert "-c constraints.txt" in install and "torch==2.13.0" in install  # the torch the suite passed on
    extras = set(re.search(r"-e '?\.\[([a-z,]+)\]'?", install).group(1).split(","))
    from duollm.cli import NEEDS

    assert set(NEEDS["demo"]) <= extras if which == "demo" else {"dev"} <= extras


def test_constraints_pin_every_dependency_of_every_extra():
    pinned = pins()
    reqs = PYPROJECT["project"]["dependencies"] + [r for extra in PYPROJECT["project"]["optional-dependencies"].values() for r in extra]
    unpinned = {requirement_name(r) for r in reqs} - set(pinned) - {"triton"}  # triton comes with a CUDA torch
    assert not unpinned, f"constraints.txt lacks {sorted(unpinned)}"
    assert pinned["torch"] == "2.13.0"


def test_extras_module_knows_every_extra_of_pyproject():
    from duollm.extras import EXTRAS

    assert set(EXTRAS) == set(PYPROJECT["project"]["optional-dependencies"]) - {"dev"}


def demo_block() -> str:
    return readme_commands.BLOCK.search(README).group(1)


def test_readme_demo_block_checks_against_the_demo_output():
    block = demo_block()
    rows = [ln for ln in readme_commands.lines(block) if ln.startswith("|")]
    assert len(rows) >= 20 and any(r.startswith("| all-big |") for r in rows)
    printed = "Successfully installed duollm\ntrain: 100%\n" + block + "\nreport: runs/demo/report/report.html\n"
    assert readme_commands.check(README, printed) == []  # pip's lines before, the demo's last lines after
    first = next(r for r in rows if r.startswith("| all-big |"))
    value = readme_commands.NUMBER.findall(first)[-1]
    off = first.replace(value, f"{float(value) * 1.03:.2f}")  # 3% away: a stale README
    problems = readme_commands.check(README, printed.replace(first, off))
    assert len(problems) == 1 and "differs from the demo's" in problems[0]
    assert readme_commands.check(README, printed.replace(first, first.replace("all-big", "all-BIG")))  # other text
    assert readme_commands.check(README, printed.replace(first + "\n", ""))  # a row missing
    assert readme_commands.check(README, printed[: printed.index(first)])  # the demo stopped early
    assert "printed no line like" in readme_commands.check(README, "no tables here")[0]


def test_update_puts_the_demo_output_into_the_block_and_then_checks():
    first = next(r for r in readme_commands.lines(demo_block()) if r.startswith("| all-big |"))
    old = readme_commands.NUMBER.findall(first)[-1]
    new = f"{float(old) * 1.04:.2f}"  # all-big moved by 4%
    printed = (
        "Successfully installed duollm\n"
        + demo_block().replace(first, f"| all-big | {new} |")
        + "\nreport: r/report.html\n\ntrained 600 steps\n"
    )
    assert readme_commands.check(README, printed)
    fresh = readme_commands.update(README, printed)
    assert readme_commands.check(fresh, printed) == [] and f"| all-big | {new} |" in fresh
    assert "report:" not in readme_commands.BLOCK.search(fresh).group(1)
    assert fresh.replace(f"| all-big | {new} |", first) == README  # nothing else of the README changed


def test_demo_formatters_print_the_readme_lines():
    """The demo's tables, rendered from made-up numbers, have the README's lines (numbers aside): a change to the
    demo's output that the README misses fails here, not only in CI's five-minute demo run."""
    from duollm.cli.demo import format_arena, format_oracle, format_ppl, format_routers

    def sweep(options, modes):
        rows = [
            {"k": k, **{f"ppl_oracle_{m}": 1.0 for m in modes}, "ppl_fixed": 1.0, "ppl_random_best": 1.0} for k in (0, 1, 2, 3, 4, "free")
        ]
        return {
            "options": options,
            "modes": modes,
            "random": 10,
            "seqs": 32,
            "tokens": 4064,
            "n_layer": 4,
            "ppl_all_big": 1.0,
            "ppl_all_small": 1.0,
            "budgets": rows,
        }

    res = {
        "split": "prose-val",
        "tokens": 32131,
        "ppl": {"all-big": 1.0, "random:0.5": 1.0, "all-small": 1.0, "unigram": 1.0},
        "oracle": sweep("big,small", ["shared", "causal"]),
        "oracle_skip": sweep("big,skip", ["shared"]),
        "routers": {kind: {"ppl": 1.0, "realized": {"big": 0.5}, "gap_recovered": 0.0} for kind in ("paper", "supervised")},
        "label_free": {"k": 2, "ppl_label_free": 1.0, "gap_recovered_causal": 0.0},
        "arena": [
            {
                "label": label,
                "method": label.split(":")[0],
                "seed": 0,
                "ppl": {"prose-val": 1.0, "code-val": 1.0},
                "flops_per_token": 1.0,
                "compute": 1.0,
                "ffn_share": 1.0,
                "target": 1.0,
                "tokens_per_s": 1.0,
                "train_tokens": 1,
                "params": 1_000_000,
                "eval_tokens": {"prose-val": 1},
            }
            for label in ("dense", "dense:budget=0.5", "duo-random:budget=0.5")
        ],
    }
    tables = [format_ppl(res), format_oracle(res["oracle"]), format_oracle(res["oracle_skip"]), format_routers(res), format_arena(res)]
    text = "\n".join(tables)
    shape = lambda s: [readme_commands.NUMBER.sub("#", line) for line in readme_commands.lines(s)]  # noqa: E731
    assert shape(text) == shape(demo_block())


def test_check_needs_the_demo_to_end_where_the_readme_block_ends():
    block = demo_block()
    assert readme_commands.check(README, block + "\nreport: r.html") == []
    extra = readme_commands.check(README, block + "\n| a new table | 1.00 |\nreport: r.html")
    assert extra and "report:" in extra[0]  # a table the README leaves out
    empty = README.replace(block, "\n")
    assert readme_commands.check(empty, block) == ["the README's demo block is empty"]
    with pytest.raises(SystemExit, match="no <!-- demo-output -->"):
        readme_commands.update("no block here", block + "\nreport: r.html")


def test_close_allows_one_percent_or_five_hundredths():
    assert readme_commands.close("58.60", "59.1") and not readme_commands.close("58.60", "59.3")
    assert readme_commands.close("0.509", "0.55") and not readme_commands.close("-0.046", "0.01")
    assert readme_commands.close("32,131", "32,131")

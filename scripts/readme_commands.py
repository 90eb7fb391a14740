"""The README's two set-up commands, as CI runs them, and the check that the README's demo tables are what the
demo printed. Standard library only: it runs before any venv exists.

    python3 scripts/readme_commands.py demo              # the command that sets up and runs `duollm demo`
    python3 scripts/readme_commands.py test              # the command that sets up and runs the tests
    python3 scripts/readme_commands.py check DEMO_OUT    # exit 1, naming each difference, when the README's
                                                         # demo output is not what DEMO_OUT (the demo's stdout) holds
    python3 scripts/readme_commands.py update DEMO_OUT   # after a change that moves the demo's numbers on purpose:
                                                         # its output, up to the `report:` line, into the README

The two commands are the first two fenced `bash` blocks of README.md that make a venv: the first runs the demo,
the second the tests. `.ci/run` runs exactly these, so the README cannot drift from what CI proves.

The README's copy of what the demo prints stands between `<!-- demo-output -->` and `<!-- /demo-output -->`.
Every line there must be, in order, the demo's own line: the same text, and every number within 1% of the
demo's or 0.05, whichever is larger (room for another CPU's rounding over 600 training steps, well below what a
change to the model, the data or the training makes: the last one moved all-big by 4%).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
REL_TOL, ABS_TOL = 0.01, 0.05
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
BLOCK = re.compile(r"<!-- demo-output -->(.*?)<!-- /demo-output -->", re.S)


def commands(readme: str) -> dict[str, str]:
    """{"demo": ..., "test": ...}: the first two fenced bash blocks that make a venv, each one command."""
    blocks = [b.strip() for b in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", readme, re.S) if "venv" in b or "pip install" in b]
    if len(blocks) < 2:
        raise SystemExit("README.md has no two fenced bash blocks with the set-up commands")
    demo, test = blocks[:2]
    for name, cmd, needle in (("first", demo, "duollm demo"), ("second", test, "pytest")):
        if "\n" in cmd or needle not in cmd:
            raise SystemExit(f"README.md's {name} set-up block must be one line that runs {needle}: {cmd!r}")
    return {"demo": demo, "test": test}


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def close(readme_value: str, demo_value: str) -> bool:
    a, b = (float(v.replace(",", "")) for v in (readme_value, demo_value))
    return abs(a - b) <= max(REL_TOL * abs(b), ABS_TOL)


def check(readme: str, demo_output: str) -> list[str]:
    """The differences between the README's demo block and what the demo printed (empty: they agree). The block's
    first line is looked up in the output (pip's lines come before it); from there line follows line, and the
    demo's next line after the block must be its closing `report: ...` line (no table left out)."""
    m = BLOCK.search(readme)
    if not m:
        return ["README.md has no <!-- demo-output --> ... <!-- /demo-output --> block"]
    want, got = lines(m.group(1)), lines(demo_output)
    if not want:
        return ["the README's demo block is empty"]
    shape = lambda line: NUMBER.sub("#", line)  # noqa: E731
    start = next((i for i, g in enumerate(got) if shape(g) == shape(want[0])), None)
    if start is None:
        return [f"the demo printed no line like the README's first one: {want[0]!r}"]
    got, after = got[start : start + len(want)], got[start + len(want) : start + len(want) + 1]
    problems = [f"the demo's output ends before the README's line {w!r}" for w in want[len(got) :]]
    for w, g in zip(want, got, strict=False):  # got may be shorter: reported above
        if shape(w) != shape(g):
            return problems + [f"README line {w!r} is not the demo's {g!r} (the lines after it are not compared)"]
        if not all(close(a, b) for a, b in zip(NUMBER.findall(w), NUMBER.findall(g), strict=True)):
            problems.append(f"README line {w!r} differs from the demo's {g!r} by more than {REL_TOL:.0%} (or {ABS_TOL})")
    if not problems and after and not after[0].startswith("report: "):
        problems.append(f"the demo printed {after[0]!r} after the README's last line, where its 'report:' line should be")
    return problems


def update(readme: str, demo_output: str) -> str:
    """The README with its demo block replaced by the demo's output, from its first line (`held-out perplexity ...`)
    to the line before `report: ...`."""
    out = demo_output.splitlines()
    start = next((i for i, line in enumerate(out) if line.startswith("held-out perplexity")), None)
    end = next((i for i, line in enumerate(out) if line.startswith("report: ")), None)
    if start is None or end is None or end < start:
        raise SystemExit("the demo output has no 'held-out perplexity' ... 'report:' lines: did the demo finish?")
    body = "\n".join(out[start:end]).strip("\n")
    m = BLOCK.search(readme)
    if not m:
        raise SystemExit("README.md has no <!-- demo-output --> ... <!-- /demo-output --> block to update")
    return readme[: m.start(1)] + "\n" + body + "\n" + readme[m.end(1) :]


def main(argv: list[str]) -> int:
    readme = README.read_text("utf-8")
    if argv[:1] in (["demo"], ["test"]):
        print(commands(readme)[argv[0]])
        return 0
    if len(argv) == 2 and argv[0] == "check":
        problems = check(readme, Path(argv[1]).read_text("utf-8", errors="replace"))
        for p in problems:
            print(f"readme: {p}", file=sys.stderr)
        if not problems:
            print(f"readme: the README's {len(lines(BLOCK.search(readme).group(1)))} demo lines match what the demo printed")
        return 1 if problems else 0
    if len(argv) == 2 and argv[0] == "update":
        README.write_text(encoding="utf-8", data=update(readme, Path(argv[1]).read_text("utf-8", errors="replace")))
        print(f"readme: the demo block of {README} now holds {argv[1]}; review it with git diff README.md")
        return 0
    print("usage: python3 scripts/readme_commands.py demo | test | check DEMO_OUT | update DEMO_OUT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

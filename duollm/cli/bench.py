"""`duollm bench NAME [ARGS...]`: run one of the speed benchmarks of a source checkout (benchmarks/bench_NAME.py).

The benchmarks live beside the package, not in it (docs/design.md §3, §7.15: benchmarks/ separate from tests), so this
command works from a checkout: it runs `python -m benchmarks.bench_NAME ARGS...` in the repository root, in a
process of its own as each benchmark expects, and exits with its code. `duollm bench list` names them;
`duollm bench NAME -- --help` gives a benchmark's own flags; docs/benchmarks.md, the commands that made the
recorded numbers.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from duollm.errors import DuoError

ROOT = Path(__file__).resolve().parents[2]  # the checkout, when duollm is installed from one (pip install -e .)


@dataclass
class BenchCommand:
    """Run a speed benchmark of the source checkout (benchmarks/bench_NAME.py); extra flags go to it."""

    POSITIONAL: ClassVar[tuple[str, ...]] = ("name",)
    name: str  # ffn, prefill, decode, train, oracle, causal (or `list`)
    args: list[str] = field(default_factory=list)  # the benchmark's own flags, passed on unchanged


def available(root: Path = ROOT) -> list[str]:
    return sorted(p.stem[len("bench_") :] for p in (root / "benchmarks").glob("bench_*.py"))


def main(cmd: BenchCommand) -> None:
    names = available()
    if not names:
        raise DuoError(f"no benchmarks/ beside the installed package in {ROOT}: `duollm bench` runs from a source checkout")
    if cmd.name == "list":
        print("\n".join(names))
        return
    if cmd.name not in names:
        raise DuoError(f"unknown benchmark {cmd.name!r}; choose one of {', '.join(names)}")
    rc = subprocess.run([sys.executable, "-m", f"benchmarks.bench_{cmd.name}", *cmd.args], cwd=ROOT).returncode
    if rc:
        raise SystemExit(rc)

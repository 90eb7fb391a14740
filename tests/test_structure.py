"""Habits that a test can hold (docs/design.md §7.1, §7.7, §7.11, §7.19): import direction, a light core import,
no hidden global state, a readable model file. Run: pytest tests/test_structure.py"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "duollm"
# what each subpackage may import from duollm (besides itself, duollm.errors and duollm.extras)
ALLOWED = {
    "routing": set(),
    "kernels": {"routing"},
    "model": {"routing", "kernels"},
    "data": set(),
    "analysis": set(),
    "oracle": {"model", "routing", "kernels", "data", "eval"},
    "routers": {"model", "routing", "kernels"},
}


def duollm_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("duollm."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("duollm.")}
    return names


@pytest.mark.parametrize("sub", sorted(ALLOWED))
def test_dependencies_point_one_way(sub):
    for f in (PKG / sub).rglob("*.py"):
        bad = duollm_imports(f) - ALLOWED[sub] - {sub, "errors", "extras"}
        assert not bad, f"{f.relative_to(PKG)} imports duollm.{bad}"


def test_core_import_is_light():
    code = "import sys, duollm, duollm.model; print(sorted(m for m in ('matplotlib', 'triton', 'wandb', 'tokenizers', 'pandas', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_global_state_and_no_distributed_in_model():
    for f in PKG.rglob("*.py"):
        src = f.read_text()
        assert not any(isinstance(n, ast.Global) for n in ast.walk(ast.parse(src))), f"`global` in {f}"
        for node in ast.parse(src).body:  # no module-level `x = []` / `x = {}` collecting values
            empty = isinstance(node, ast.Assign) and (
                (isinstance(node.value, ast.List) and not node.value.elts) or (isinstance(node.value, ast.Dict) and not node.value.keys)
            )
            assert not empty, f"module-level mutable container in {f}"
    for f in (PKG / "model").rglob("*.py"):
        src = f.read_text()
        for banned in ("torch.distributed", "torch.compile", "safetensors", "matplotlib"):
            assert banned not in src, f"{banned} in {f}"
    assert len((PKG / "model" / "transformer.py").read_text().splitlines()) <= 400


# a citation of a file outside the repository, which a user does not have (written so that it does not cite one)
OUTSIDE = re.compile(r"[.][.][/]shared|shared[/](paper|notes|tools)[/]|(DESIGN|STYLE)[.]md")


def test_the_project_cites_nothing_outside_the_repository():
    root = PKG.parent
    files = [
        root / "README.md",
        *(f for d in ("duollm", "tests", "docs", "scripts", "benchmarks", "experiments", ".ci") for f in (root / d).rglob("*")),
    ]
    cites = [
        f"{f.relative_to(root)}:{i}"
        for f in files
        if f.is_file() and f.suffix in {".py", ".md", ".sh", ".txt", ".toml", ""} and "__pycache__" not in f.parts
        for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not cites, f"these lines cite files outside the repository (say it in docs/design.md instead): {cites}"

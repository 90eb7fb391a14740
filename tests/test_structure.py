"""Habits that a test can hold (docs/design.md §7.1, §7.7, §7.11, §7.19): import direction, a light core import,
no hidden global state, a readable model file. Run: pytest tests/test_structure.py"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "duollm"

# The layers, bottom up (docs/design.md §3): a module imports from its own package or from a lower layer only.
LAYERS = [
    ("errors",),
    ("extras", "flags", "files"),
    ("analysis",),  # reads run files; imports no torch code
    ("routing",),
    ("kernels",),
    ("model",),
    ("data",),
    ("config",),
    ("presets",),
    ("runs", "distributed"),
    ("oracle",),
    ("routers",),
    ("methods",),  # the arena's entrants behind one interface (methods/base.py)
    ("eval",),
    ("train", "hf", "pretrained"),
    ("cli",),  # one module per command group: its Command dataclass and main
    ("__main__",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
ROOT_RANK = RANK["model"] + 0.5  # duollm/__init__.py: the contract's names, from model and routing
# arrows that go up on purpose, each with its reason
EXCEPTIONS = {("duollm", "duollm.hf.register"): "the import hook that registers the Auto classes once transformers is imported"}


def module_name(path: Path, pkg: Path = PKG) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The duollm modules `source` (of `module`) imports anywhere: at the top, inside functions, `from duollm import
    x` (the module x where x is one, else the package), relative imports."""

    def owner(name: str) -> str:  # the longest known module that `name` is, or is inside
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            if base == "duollm" or base.startswith("duollm."):
                out |= {owner(f"{base}.{a.name}") for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {owner(a.name) for a in node.names if a.name == "duollm" or a.name.startswith("duollm.")}
    return out - {module, ""}


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    files = {module_name(f, pkg): f for f in pkg.rglob("*.py")}
    return {m: imports_of(f.read_text(), m, f.name == "__init__.py", set(files)) for m, f in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Arrows between packages that do not go down the layer order."""

    def rank(m: str) -> float:
        return ROOT_RANK if m == "duollm" else RANK[m.split(".")[1]]

    def package(m: str) -> str:
        return m if m == "duollm" else m.split(".")[1]

    return [
        f"{m} -> {o}"
        for m, outs in sorted(graph.items())
        for o in sorted(outs)
        if package(m) != package(o) and rank(o) >= rank(m) and (m, o) not in EXCEPTIONS
    ]


def test_the_graph_sees_every_kind_of_import():
    known = {"duollm", "duollm.errors", "duollm.oracle", "duollm.oracle.search", "duollm.oracle.causal", "duollm.runs.load"}
    src = """
from duollm import errors
from duollm.oracle.search import search
from . import causal
def f():
    import duollm.runs.load
    from duollm.oracle import search as s
"""
    found = imports_of(src, "duollm.oracle.sweep", False, known)
    assert found == {"duollm.errors", "duollm.oracle.search", "duollm.oracle.causal", "duollm.runs.load"}


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_only_look_down_the_layers():
    graph = import_graph()
    assert {m.split(".")[1] for m in graph if m != "duollm"} <= set(RANK), "a package without a layer: add it to LAYERS"
    assert upward(graph) == []


# the lower layers are stricter than the order alone: what each may import besides the base (errors, extras, flags,
# files), as docs/design.md §3 has it
BASE = {"errors", "extras", "flags", "files"}
MAY_IMPORT = {
    "analysis": set(),
    "routing": set(),
    "kernels": {"routing"},
    "model": {"routing", "kernels"},
    "data": set(),
    "routers": {"model", "routing", "kernels", "runs"},
    "pretrained": {"model", "data", "config", "runs", "routing"},  # from_llama needs the model only; the import job writes a run
}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_the_lower_layers_import_only_what_they_may(package):
    graph = import_graph()
    used = {o.split(".")[1] for m, outs in graph.items() if m.startswith(f"duollm.{package}") for o in outs if o != "duollm"}
    assert used - {package} - BASE - MAY_IMPORT[package] == set()


def test_analysis_imports_no_torch():
    for f in (PKG / "analysis").rglob("*.py"):
        tree = ast.parse(f.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(n == "torch" or n.startswith("torch.") for n in names), f"{f} imports torch"


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


# where the program meets the user: only the cli package prints; the library returns values
def library_files() -> list[Path]:
    return sorted(f for f in PKG.rglob("*.py") if "cli" not in f.relative_to(PKG).parts[:1] and f.name != "__main__.py")


def test_the_library_prints_nothing():
    printing = [
        f"{f.relative_to(PKG.parent)}:{n.lineno}"
        for f in library_files()
        for n in ast.walk(ast.parse(f.read_text()))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
    ]
    assert printing == []


def test_each_command_lives_in_a_cli_module_with_its_dataclass_and_main():
    import dataclasses
    import importlib

    from duollm.cli import COMMANDS

    for name, (module, cls_name, fn) in COMMANDS.items():
        assert module.startswith("duollm.cli."), f"{name}: {module} is not in the cli package"
        mod = importlib.import_module(module)
        assert dataclasses.is_dataclass(getattr(mod, cls_name)) and callable(getattr(mod, fn)), name
    modules = {m for m, _, _ in COMMANDS.values()}
    assert modules == {module_name(f) for f in (PKG / "cli").glob("*.py") if f.name != "__init__.py"}, "a cli module without a command"


# imports inside functions: optional dependencies only, each group with a one-line reason
OPTIONAL = {"matplotlib", "transformers", "tokenizers", "triton", "lm_eval", "gguf", "accelerate"}
IMPORT_OPTIONAL = {"duollm.hf.config", "duollm.hf.modeling", "duollm.hf.tokenizer"}  # these import transformers at the top
IMPORT_OPTIONAL |= {"duollm.kernels.triton_ffn", "duollm.kernels.triton_decode"}  # and these Triton


def local_imports(f: Path) -> list[tuple[int, str]]:
    tree, out = ast.parse(f.read_text()), []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for n in ast.walk(fn):
                if isinstance(n, ast.Import):
                    out += [(n.lineno, a.name) for a in n.names]
                elif isinstance(n, ast.ImportFrom):
                    out.append((n.lineno, n.module or ""))
    return sorted(set(out))


def test_imports_inside_functions_are_optional_dependencies_with_a_reason():
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        lines = f.read_text().splitlines()
        for lineno, name in local_imports(f):
            where = f"{f.relative_to(PKG.parent)}:{lineno} {name}"
            if name.split(".")[0] not in OPTIONAL and name not in IMPORT_OPTIONAL:
                bad.append(f"{where}: import it at the top of the file")
                continue
            first = lineno - 1  # the group of import lines this one belongs to carries the reason
            while first > 0 and lines[first - 1].strip().startswith(("from ", "import ")):
                first -= 1
            last = lineno - 1
            while last + 1 < len(lines) and lines[last + 1].strip().startswith(("from ", "import ")):
                last += 1
            if not any("#" in line for line in lines[first : last + 1]):
                bad.append(f"{where}: say in a comment why it is imported here")
    assert bad == []

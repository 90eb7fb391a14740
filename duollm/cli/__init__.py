"""The command line: a table from subcommand to (command dataclass, main function), and argparse around it.

Flags come from the dataclass fields (their trailing comments are the help). `train` and `demo` also take
dotted config overrides such as `--model.n_layer=8`. Bad input of any kind prints one line on stderr and
exits with code 2.

Each command group has a module here: its Command dataclass (the flags; for a library job, the job's spec
dataclass plus `--json`) and its `main`, which calls the library and prints. The library itself prints nothing.
Command modules are imported only when their command runs (or `--help` lists them), so `duollm` starts fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
import typing

from duollm.errors import DuoError
from duollm.extras import require
from duollm.flags import base_type, range_of

EXAMPLES = """examples:
  duollm demo                                        # the whole study, small, on the built-in books (~4 min on 2 cores)
  duollm train --preset tiny --out runs/t --steps 200 --model.n_layer=2
  duollm eval --run runs/t --policy BSBS --split prose-val --json
  duollm oracle --run runs/t --budgets 0-4,free --mode causal --random 20
  duollm router train --run runs/t --kind paper --budget 0.5
  duollm generate --run runs/t --prompt "In the beginning" --policy router:paper-0.5
  duollm report --run runs/t
  duollm export --run runs/t --hf hf/t --policy BSBS   # AutoModelForCausalLM.from_pretrained("hf/t") after import duollm
  duollm mc --run runs/t --data arc.jsonl --policy all-small --json  # multiple-choice accuracy, offline
  duollm bench ffn --preset gpt2-124m --tokens 16384   # a speed benchmark of the checkout (GPU); bench list
  duollm arena --out runs/arena --entrants dense,dense:budget=0.5,duo-random:budget=0.5   # trained side by side
"""

# subcommand → (module, command dataclass, main function); each module of this package holds one command group
COMMANDS = {
    "demo": ("duollm.cli.demo", "DemoCommand", "main"),
    "train": ("duollm.cli.train", "TrainCommand", "main"),
    "eval": ("duollm.cli.eval", "EvalCommand", "main"),
    "generate": ("duollm.cli.generate", "GenerateCommand", "main"),
    "oracle": ("duollm.cli.oracle", "OracleCommand", "main"),
    "difficulty": ("duollm.cli.difficulty", "DifficultyCommand", "main"),
    "report": ("duollm.cli.report", "ReportCommand", "main"),
    "claims": ("duollm.cli.claims", "ClaimsCommand", "main"),
    "router train": ("duollm.cli.router", "RouterTrainCommand", "main_train"),
    "router eval": ("duollm.cli.router", "RouterEvalCommand", "main_eval"),
    "router calibrate": ("duollm.cli.router", "RouterCalibrateCommand", "main_calibrate"),
    "data fetch": ("duollm.cli.data", "FetchCommand", "main_fetch"),
    "bench": ("duollm.cli.bench", "BenchCommand", "main"),
    "export": ("duollm.cli.hf", "ExportCommand", "main_export"),
    "import": ("duollm.cli.hf", "ImportCommand", "main_import"),
    "mc": ("duollm.cli.mc", "MCCommand", "main"),
    "data build": ("duollm.cli.data", "BuildCommand", "main_build"),
    "arena": ("duollm.cli.arena", "ArenaCommand", "main"),
}
# subcommand → the optional extras it needs, checked before it starts any work (duollm/extras.py)
NEEDS = {"demo": ("analysis",), "report": ("analysis",), "arena": ("analysis",), "export": ("hf",)}  # `import` reads the files itself
TAKES_OVERRIDES = {"train", "demo", "arena"}
PASSES_ON = {"bench"}  # commands whose unknown flags go, unchanged, to what they run (their `args` field)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _field_help(cls: type) -> dict[str, str]:
    """`name: type = default  # help` comments of a dataclass and of the spec it extends, read from their source."""
    helps: dict[str, str] = {}
    for c in reversed(cls.__mro__[:-1]):  # the spec's fields first, the command's own after
        try:
            helps.update(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", inspect.getsource(c), re.M))
        except (OSError, TypeError):
            pass
    return helps


def _add_fields(p: argparse.ArgumentParser, cls: type) -> None:
    helps, hints = _field_help(cls), typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if f.name in ("overrides", "args"):  # dotted --a.b=value flags, or flags passed on: parsed separately
            continue
        if f.name in getattr(cls, "POSITIONAL", ()):
            p.add_argument(f.name, metavar=f.name.upper(), help=helps.get(f.name, ""))
            continue
        tp, flag = base_type(hints[f.name]), "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        bounds = f" ({range_of(hints[f.name])})" if range_of(hints[f.name]) else ""
        kw = {"help": helps.get(f.name, "") + bounds, "required": required}
        if tp is bool:
            p.add_argument(flag, action="store_true", **kw)
        else:
            default = None if required else f.default
            p.add_argument(flag, type=tp, default=default, metavar=f.name.upper(), **kw)


def check_ranges(cls: type, values: dict) -> None:
    """DuoError naming the first numeric flag outside the range its field declares (duollm/flags.py)."""
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        if (rng := range_of(tp)) is not None and name in values:
            rng.check(values[name], "--" + name.replace("_", "-"))


def _parse_overrides(rest: list[str], prog: str) -> dict[str, str]:
    """`--model.n_layer=8` or `--model.n_layer 8` → {"model.n_layer": "8"}."""
    out, i = {}, 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            raise SystemExit(f"{prog}: error: unrecognized argument {arg!r}")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(rest):
                raise SystemExit(f"{prog}: error: {arg} needs a value")
            value, i = rest[i + 1], i + 1
        out[key] = value
        i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="duollm",
        description="Adaptive computation in language models (Duo-LLM).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (mod, cls_name, _) in COMMANDS.items():
        cls = getattr(importlib.import_module(mod), cls_name)
        head, _, tail = name.partition(" ")
        if tail:  # a group such as `data fetch`
            if head not in groups:
                gp = sub.add_parser(head, help=f"{head} commands")
                groups[head] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
            sp = groups[head].add_parser(tail, help=cls.__doc__.strip().splitlines()[0], description=cls.__doc__)
        else:
            sp = sub.add_parser(name, help=cls.__doc__.strip().splitlines()[0], description=cls.__doc__)
        _add_fields(sp, cls)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        name = args.command + (f" {args.subcommand}" if getattr(args, "subcommand", None) else "")
        mod, cls_name, fn = COMMANDS[name]
        for extra in NEEDS.get(name, ()):
            require(extra, f"duollm {name}")
        cls = getattr(importlib.import_module(mod), cls_name)
        overrides = _parse_overrides(rest, f"duollm {name}") if name in TAKES_OVERRIDES else {}
        if rest and name not in TAKES_OVERRIDES | PASSES_ON:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in ("overrides", "args")}
        check_ranges(cls, values)
        extra = {"overrides": overrides} if name in TAKES_OVERRIDES else {"args": rest} if name in PASSES_ON else {}
        cmd = cls(**values, **extra)
        getattr(importlib.import_module(mod), fn)(cmd)
    except SystemExit as e:
        if isinstance(e.code, str):  # our one-line messages
            print(e.code, file=sys.stderr)
            return 2
        return int(e.code or 0)
    except (DuoError, ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        print(f"duollm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("duollm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`duollm export` and `duollm import`: a run to a Hugging Face folder and back (hf/convert.py), printed as a line."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from duollm.hf.convert import ExportSpec, ImportSpec, export, import_folder, model_type
from duollm.pretrained.job import PretrainedSpec, import_pretrained


@dataclass
class ExportCommand(ExportSpec):
    """Write a run as a Hugging Face folder (AutoModelForCausalLM / AutoTokenizer load it)."""

    json: bool = False  # print one JSON object instead of text


@dataclass
class ImportCommand(PretrainedSpec):
    """Turn a pretrained Llama model (a folder, a GGUF file, or a short name) or a Duo model's folder into a run."""

    json: bool = False  # print one JSON object instead of text


def main_export(cmd: ExportCommand) -> None:
    res = export(cmd)
    if cmd.json:
        print(json.dumps(res))
        return
    extra = f"; routers {', '.join(res['routers'])}" if res["routers"] else ""
    skipped = f" (skipped, own base weights: {', '.join(res['skipped_routers'])})" if res["skipped_routers"] else ""
    print(
        f"exported {res['run']} (step {res['step']}, {res['params']:,} parameters) to {res['hf']}, policy {res['policy']}{extra}{skipped}"
    )


def main_import(cmd: ImportCommand) -> None:
    if cmd.hf and not (cmd.gguf or cmd.pretrained) and model_type(Path(cmd.hf)) != "llama":  # a Duo folder (duollm export)
        res = import_folder(ImportSpec(hf=cmd.hf, out=cmd.out))
        if cmd.json:
            print(json.dumps(res))
            return
        extra = f"; routers {', '.join(res['routers'])}" if res["routers"] else ""
        print(f"imported {res['hf']} ({res['params']:,} parameters) as the run {res['run']}{extra}")
        return
    res = import_pretrained(cmd, log=None if cmd.json else lambda line: print(line, file=sys.stderr))
    if cmd.json:
        print(json.dumps(res))
        return
    print(
        f"imported {res['source']} ({res['params']:,} parameters, SMALL {res['d_small']} by {res['small']}{' as a view of BIG' if res['small_view'] else ''}, "
        f"relative error {res['small_error']['mean']:.3f}) as the run {res['run']} in {res['seconds']:.0f} s"
    )

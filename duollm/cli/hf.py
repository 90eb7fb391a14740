"""`duollm export` and `duollm import`: a run to a Hugging Face folder and back (hf/convert.py), printed as a line."""

from __future__ import annotations

import json
from dataclasses import dataclass

from duollm.hf.convert import ExportSpec, ImportSpec, export, import_folder


@dataclass
class ExportCommand(ExportSpec):
    """Write a run as a Hugging Face folder (AutoModelForCausalLM / AutoTokenizer load it)."""

    json: bool = False  # print one JSON object instead of text


@dataclass
class ImportCommand(ImportSpec):
    """Turn a Hugging Face folder of a Duo model (from duollm export or save_pretrained) into a run."""

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
    res = import_folder(cmd)
    if cmd.json:
        print(json.dumps(res))
        return
    extra = f"; routers {', '.join(res['routers'])}" if res["routers"] else ""
    print(f"imported {res['hf']} ({res['params']:,} parameters) as the run {res['run']}{extra}")

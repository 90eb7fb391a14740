"""The run configuration: one dataclass nesting each component's own, dotted overrides, JSON round trip.

`RunConfig` = `DuoConfig` (model) + `DataConfig` (data) + `TrainConfig` (train, here: the training loop in
train/loop.py sits above the run files that read it, so its config lives below both). Presets (presets.py) return
one; the command line edits it with `--model.n_layer=8`-style flags; an unknown key or a value of the wrong
type is an error naming it. The resolved config is saved as `config.json` in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Literal

from duollm.data.corpus import DataConfig
from duollm.errors import DuoError
from duollm.flags import Count, Fraction, NonNegative, Positive, PositiveFloat, Range, range_of
from duollm.model.transformer import DuoConfig


@dataclass
class TrainConfig:
    """Stage-1 optimisation and routing."""

    steps: Count = 20  # optimizer steps
    batch_size: Positive = 8  # sequences per micro-batch on each rank
    grad_accum: Positive = 1  # micro-batches per optimizer step
    seq_len: Annotated[int, Range(2)] = 64  # tokens per sequence (<= model.max_seq_len)
    lr: PositiveFloat = 3e-3  # peak learning rate
    min_lr_ratio: Fraction = 0.1  # the cosine ends at lr * min_lr_ratio
    warmup_steps: Count = 5  # linear warmup from 0
    weight_decay: NonNegative = 0.1  # on matrices only (not norms)
    beta1: Fraction = 0.9
    beta2: Fraction = 0.95
    grad_clip: NonNegative = 1.0  # max global grad norm; 0 = off
    p_big: Fraction = 0.5  # random routing: probability of BIG per (token, layer)
    p_small: Fraction = 0.5  # probability of SMALL
    p_skip: Fraction = 0.0  # probability of SKIP (our extension; the paper trains without skips)
    exact_counts: bool = False  # each layer's choices in exact proportions p, the same counts every step (sample.py)
    seed: Count = 0  # model init, data order and routes
    log_every: Positive = 10  # steps between metrics.jsonl lines
    ckpt_every: Count = 0  # steps between checkpoints; 0 = only at the end
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False  # torch.compile the model
    init: str = ""  # a run directory whose latest weights start this run (not its optimizer, data order or step)
    train_only: Literal["", "small", "big"] = ""  # only these modules learn (every `.small.`/`.big.` parameter); "" = all


@dataclass
class RunConfig:
    """Everything one training run needs; saved as `config.json`."""

    preset: str = "tiny"  # the preset this started from (informational)
    model: DuoConfig = field(default_factory=DuoConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn a command-line string or JSON value into a field's type, or raise DuoError naming the key."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise DuoError(f"{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(_coerce(v, typing.get_args(tp)[0], key) for v in items)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes"):
                return True
            if str(value).lower() in ("0", "false", "no"):
                return False
            raise ValueError
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if tp is int and isinstance(value, str):
            f = float(value)  # accepts "3", "1e6"; rejects "2.5" below
            if not f.is_integer():
                raise ValueError
            return int(f)
        return tp(value)
    except (TypeError, ValueError):
        raise DuoError(f"{key} must be {getattr(tp, '__name__', tp)}, got {value!r}") from None


def apply_overrides(cfg: Any, overrides: dict[str, Any], prefix: str = "") -> Any:
    """Return a copy of `cfg` with dotted keys (`model.n_layer`) set; unknown keys raise DuoError."""
    types = _field_types(type(cfg))
    ranged = typing.get_type_hints(type(cfg), include_extras=True)  # Annotated[int, Range(...)] kept
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        full = prefix + head
        if head not in types:
            known = ", ".join(sorted(types))
            raise DuoError(f"unknown config key {prefix + key!r} (known under {prefix.rstrip('.') or 'the run'}: {known})")
        is_nested = dataclasses.is_dataclass(types[head])
        if is_nested and rest:
            nested.setdefault(head, {})[rest] = value
        elif is_nested and isinstance(value, dict):
            nested.setdefault(head, {}).update(value)
        elif rest or is_nested:
            raise DuoError(f"config key {prefix + key!r} does not name a field")
        else:
            flat[head] = _coerce(value, types[head], full)
            if isinstance(flat[head], int | float) and not isinstance(flat[head], bool):  # NaN and inf never; a declared range
                (range_of(ranged[head]) or Range()).check(flat[head], full)
    for head, sub in nested.items():
        flat[head] = apply_overrides(getattr(cfg, head), sub, prefix + head + ".")
    try:
        return dataclasses.replace(cfg, **flat)
    except ValueError as e:  # __post_init__ checks of the component
        raise DuoError(f"bad config: {e}") from None


def to_dict(cfg: Any) -> dict:
    return asdict(cfg)


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a config dataclass from its JSON form; unknown keys are an error (a file from elsewhere)."""
    return apply_overrides(cls(), data)


def save_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False) + "\n"


def diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs of one class."""
    out = []
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(x):
            out += diff(x, y, prefix + f.name + ".")
        elif x != y:
            out.append(f"{prefix}{f.name}: {x!r} != {y!r}")
    return out

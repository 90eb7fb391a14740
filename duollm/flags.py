"""Ranges of numeric settings, declared where a dataclass declares its fields: the command-line flags (checked by
the CLI before any work starts) and the run config's fields (checked when a dotted override or a config file sets
them, config.apply_overrides). A bad value is one line, exit code 2:

    batch_size: Positive = 32  # sequences per batch        → duollm ...: error: --batch-size must be >= 1, got 0

A float flag must also be finite: NaN and infinity are refused whatever its range.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Annotated

from duollm.errors import DuoError


@dataclass(frozen=True)
class Range:
    """lo <= value (lo < value when `lo_open`), and value <= hi; None: no bound."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def __str__(self) -> str:
        low = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        high = "" if self.hi is None else f"<= {self.hi:g}"
        return " and ".join(s for s in (low, high) if s) or "finite"

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def check(self, value: float, flag: str) -> None:
        if not self.holds(value):
            raise DuoError(f"{flag} must be {self}, got {value}")


Count = Annotated[int, Range(0)]  # 0 or more (0 often means "the default" or "all")
Positive = Annotated[int, Range(1)]
NonNegative = Annotated[float, Range(0)]
PositiveFloat = Annotated[float, Range(0, lo_open=True)]
Fraction = Annotated[float, Range(0, 1)]  # a probability, a ratio of two amounts


def base_type(tp: typing.Any) -> typing.Any:
    """int for Annotated[int, Range(...)]; any other type as it is."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def range_of(tp: typing.Any) -> Range | None:
    """The Range an Annotated type declares, or None."""
    if typing.get_origin(tp) is Annotated:
        return next((m for m in typing.get_args(tp)[1:] if isinstance(m, Range)), None)
    return None

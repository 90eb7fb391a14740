"""The report's HTML page: its style, the figures written beside it, and small cell formatters."""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from duollm.extras import require

esc = html.escape


CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f0f0f0}td.l{text-align:left;font-family:monospace}figure{margin:1em 0}img{max-width:100%}
figcaption{font-size:13px;color:#555}.note{color:#a33;font-style:italic}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
.text{white-space:pre-wrap;font-family:monospace;font-size:13px;border:1px solid #ddd;padding:.5em;margin:.4em 0;line-height:1.6}"""


@dataclass
class Page:
    """The HTML being built and the PNG figures written beside it."""

    out: Path  # folder for report.html and the PNGs
    parts: list[str] = field(default_factory=list)  # HTML pieces, in order
    figures: list[str] = field(default_factory=list)  # PNG file names, in order

    def add(self, text: str) -> None:
        self.parts.append(text)

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{esc(text)}</p>')

    def figure(self, fig, name: str, caption: str) -> None:
        with warnings.catch_warnings():  # a token text in a script the font lacks only loses its glyphs
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(self.out / name, dpi=100, bbox_inches="tight")
        self.figures.append(name)
        self.parts.append(f'<figure><img src="{esc(name)}" alt="{esc(name)}"><figcaption>{esc(caption)}</figcaption></figure>')


def new_figure(width: float, height: float):
    require("analysis", "duollm report")
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no GUI backend

    return Figure(figsize=(width, height))


def cell(v) -> str:
    return "–" if v is None else f"{v:.2f}" if isinstance(v, float) else esc(str(v))


def num(v, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)

"""The Duo model (no distributed, compile, checkpoint or plotting code here: docs/design.md §7.7)."""

from duollm.model.ffn import RoutedFFN, SwiGLU
from duollm.model.transformer import DuoConfig, DuoLM, DuoOutput

__all__ = ["DuoConfig", "DuoLM", "DuoOutput", "RoutedFFN", "SwiGLU"]

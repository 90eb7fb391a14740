"""Registration of the `duollm` model type with transformers' Auto classes, without importing transformers early.

The rule (docs/hf.md): **once `duollm` and transformers' Auto classes are both imported, in
either order, `AutoConfig` and `AutoModelForCausalLM` know the model type `duollm`.** `import duollm` costs
no transformers import (about 5 s): `install()`, called by `duollm/__init__.py`, registers at once where
transformers' auto modules are already imported, and otherwise puts a small finder on `sys.meta_path` that
registers right after they are (`importlib`'s documented hook for imports).

Two modules are watched, and each registers what it defines:
- `transformers.models.auto.configuration_auto` (AutoConfig): the config class, which needs only
  `PretrainedConfig`, already loaded by then;
- `transformers.models.auto.modeling_auto` (AutoModelForCausalLM): the model class.
A registration that fails (an incompatible transformers) warns and leaves transformers usable.
"""

from __future__ import annotations

import sys
import warnings

CONFIG_MODULE = "transformers.models.auto.configuration_auto"
MODEL_MODULE = "transformers.models.auto.modeling_auto"


def register_config() -> None:
    from transformers import AutoConfig  # runs once transformers is imported (the hook above): never imports it first

    from duollm.hf.config import DuoLMConfig  # imports transformers: only once it is imported anyway

    AutoConfig.register("duollm", DuoLMConfig, exist_ok=True)


def register_model() -> None:
    from transformers import AutoModelForCausalLM  # as above: transformers is already imported when this runs

    from duollm.hf.config import DuoLMConfig  # these two import transformers: only once it is imported anyway
    from duollm.hf.modeling import DuoForCausalLM

    register_config()
    AutoModelForCausalLM.register(DuoLMConfig, DuoForCausalLM, exist_ok=True)


WATCHED = {CONFIG_MODULE: register_config, MODEL_MODULE: register_model}


def _register(module_name: str) -> None:
    try:
        WATCHED[module_name]()
    except Exception as e:  # never break the user's transformers import because of ours
        warnings.warn(f"duollm: could not register the duollm model type with transformers ({e})", stacklevel=2)


class AfterImport:
    """A `sys.meta_path` finder (duck-typed: `importlib.abc` alone would cost 10 ms) that finds nothing itself:
    for a watched module it asks the other finders, then wraps the loader so that the module's registration
    runs right after the module has executed."""

    def find_spec(self, name, path, target=None):
        if name not in WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                exec_module = spec.loader.exec_module

                def exec_then_register(module, exec_module=exec_module, name=name):
                    exec_module(module)
                    _register(name)

                spec.loader.exec_module = exec_then_register  # this module's own loader object
                return spec
        return None


def install() -> None:
    """Register now for the auto modules already imported; watch for the others (once per process)."""
    for name in WATCHED:
        if name in sys.modules:
            _register(name)
    if not all(name in sys.modules for name in WATCHED) and not any(isinstance(f, AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, AfterImport())

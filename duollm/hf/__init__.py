"""Hugging Face transformers integration: a Duo model as a transformers causal LM (docs/hf.md).

    from transformers import AutoModelForCausalLM, AutoTokenizer
    import duollm                                              # registers the model type `duollm` (register.py)
    model = AutoModelForCausalLM.from_pretrained("hf/t")       # a folder from `duollm export --run RUN --hf hf/t`
    ids = AutoTokenizer.from_pretrained("hf/t")("In the beginning", return_tensors="pt").input_ids
    model.generate(ids, max_new_tokens=20, policy="BS-B")      # any policy, per call

- config.py    `DuoLMConfig` (model type `duollm`): DuoConfig's fields, the default policy, the run it came from
- modeling.py  `DuoForCausalLM`: the same `DuoLM` modules, routing per call, the DynamicCache adapter
- register.py  Auto-class registration when both duollm and transformers are imported (either order)
- tokenizer.py the run's tokenizer as a `PreTrainedTokenizerFast`
- convert.py   a run → a Hugging Face folder (`duollm export`) and back (`duollm import`)

This package's `__init__` stays light (no transformers import) because `import duollm` installs the
registration hook from it; the classes load on first use (`duollm.hf.DuoForCausalLM`).
"""

import importlib

_EXPORTS = {"DuoLMConfig": "duollm.hf.config", "DuoForCausalLM": "duollm.hf.modeling", "hf_tokenizer": "duollm.hf.tokenizer"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'duollm.hf' has no attribute {name!r}")

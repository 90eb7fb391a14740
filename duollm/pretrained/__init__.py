"""Duo models from dense pretrained checkpoints: a Llama-family model's weights in a `DuoLM`.

    from duollm.pretrained import from_llama
    duo = from_llama("path/to/llama-folder", d_small=512)   # or a transformers LlamaForCausalLM instance
    duo(ids).logits                                          # all-BIG: the Llama model's logits

- llama.py  `from_llama`: the config mapped to a `DuoConfig` (or refused, naming what a Duo model cannot
            represent), embeddings, attention, norms and head copied, BIG = the pretrained FFN
- slice.py  SMALL made from BIG: the `d_small` most important inner neurons (`slice_scores`), with or without
            calibration text, copied into SMALL's weights or (`view=True`) kept as a view of BIG's first neurons

transformers is an optional dependency (the `pretrained` extra): it is imported only inside `from_llama`, so
importing this package costs nothing.
"""

from duollm.pretrained.llama import from_llama
from duollm.pretrained.slice import calib_scores, slice_scores, slice_small

__all__ = ["calib_scores", "from_llama", "slice_scores", "slice_small"]

"""duollm: adaptive computation in language models, around the Duo-LLM design (arXiv:2410.10846).

`from duollm import DuoConfig, DuoLM, Choice` is the contract of docs/design.md §4. Importing duollm pulls in torch
only: no plotting, no Triton, no tokenizers, no transformers. It does make the model type `duollm` known to
transformers' Auto classes once those are imported too, in either order (duollm/hf/register.py).
"""

from duollm.hf.register import install as _install_hf_registration
from duollm.model import DuoConfig, DuoLM, DuoOutput
from duollm.routing import Choice

__all__ = ["Choice", "DuoConfig", "DuoLM", "DuoOutput"]
__version__ = "0.1.0"

_install_hf_registration()

"""duollm: adaptive computation in language models, around the Duo-LLM design (shared/paper/duo-llm.md).

`from duollm import DuoConfig, DuoLM, Choice` is the contract of DESIGN.md §4. Importing duollm pulls in torch
only: no plotting, no Triton, no tokenizers.
"""

from duollm.model import DuoConfig, DuoLM, DuoOutput
from duollm.routing import Choice

__all__ = ["Choice", "DuoConfig", "DuoLM", "DuoOutput"]
__version__ = "0.1.0"

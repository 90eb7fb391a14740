"""Per-token losses and perplexity under any policy."""

from duollm.eval.evaluate import token_losses, unigram_losses
from duollm.eval.policy import Policy, parse_policy

__all__ = ["Policy", "parse_policy", "token_losses", "unigram_losses"]

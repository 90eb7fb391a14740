"""Oracles: per-token best routes under a budget (shared-route search here; causal search in oracle.causal; beam
search over the route tree in oracle.beam; route groups in oracle.groups), and the baselines beside them."""

from duollm.oracle.baselines import LabelFreeResult, RandomResult, label_free, random_best_of_n
from duollm.oracle.groups import Groups
from duollm.oracle.loss import SearchResult
from duollm.oracle.search import beam_search, brute_force, search, search_many

__all__ = [
    "LabelFreeResult",
    "RandomResult",
    "label_free",
    "random_best_of_n",
    "SearchResult",
    "Groups",
    "beam_search",
    "brute_force",
    "search",
    "search_many",
]

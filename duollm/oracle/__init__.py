"""Oracles: per-token best routes under a budget (shared-route search; causal search to come)."""

from duollm.oracle.baselines import RandomResult, random_best_of_n
from duollm.oracle.search import SearchResult, brute_force, search, search_many

__all__ = ["RandomResult", "random_best_of_n", "SearchResult", "brute_force", "search", "search_many"]

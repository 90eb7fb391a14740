"""Oracles: per-token best routes under a budget (shared-route search; causal search to come)."""

from duollm.oracle.search import SearchResult, brute_force, search, search_many

__all__ = ["SearchResult", "brute_force", "search", "search_many"]

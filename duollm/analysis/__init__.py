"""Analysis of run directories: oracle tables, trained routers' evaluations, token difficulty, figures and the HTML report.

Reads files only (never the model, never torch); matplotlib is imported inside the plotting functions.
"""

from duollm.analysis.routers import Router, RouterEval, read_routers
from duollm.analysis.table import OracleTable, read_summary, read_table, usage

__all__ = ["OracleTable", "Router", "RouterEval", "read_routers", "read_summary", "read_table", "usage"]

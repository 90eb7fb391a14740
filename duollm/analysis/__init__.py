"""Analysis of run directories: oracle tables, trained routers' evaluations, token difficulty, figures and the HTML report.

Reads files only: no module here imports the model or torch itself (the package `duollm` does, on import), so
the analysis keeps no tie to the model's code; matplotlib is imported inside the plotting functions.
"""

from duollm.analysis.routers import Router, RouterEval, read_routers
from duollm.analysis.table import OracleTable, read_summary, read_table, usage

__all__ = ["OracleTable", "Router", "RouterEval", "read_routers", "read_summary", "read_table", "usage"]

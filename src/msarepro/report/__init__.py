"""Generated reports: per-dataset tables (.md, .tex) beside the papers' numbers, the reports README, plots.

Everything under reports/ (except reports/paper_results/, transcribed from the papers) is written by the
`tables` stage from the `evaluate` stage's outputs; nothing there is edited by hand.
"""
from .stage import write_reports
from .tables import build_tables, load_paper_results

__all__ = ["build_tables", "load_paper_results", "write_reports"]

"""The HTML report of a compression run: summary table, Pareto plots, sample grids."""

from slimgen.report.html import write_report

__all__ = ["write_report"]

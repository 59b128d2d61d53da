"""The HTML report of a compression run: summary table, Pareto plots, sample grids."""

from slimgen.report.html import write_frontier_report, write_report
from slimgen.report.pareto import pareto_front, plot_frontier, read_frontier

__all__ = ["pareto_front", "plot_frontier", "read_frontier", "write_frontier_report", "write_report"]

"""Pareto fronts of quality against cost: FID / teacher against "x fewer" MACs, stored bytes or latency.

A point is (reduction, fid_ratio): ``reduction`` = the teacher's cost over the model's (higher is
better: 10 = ten times fewer MACs), ``fid_ratio`` = the model's FID over the teacher's in the same
feature space on the same latents (lower is better). A point is on the front when no other point
is at least as good on both and better on one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimgen.errors import ConfigError

#: (key in a frontier row, axis label): the cost axes of :func:`plot_frontier`.
AXES = (("macs_x", "MACs x fewer than the teacher"), ("bytes_x", "stored bytes x fewer than the teacher"))


@dataclass(frozen=True)
class Point:
    """One model on one cost axis: ``reduction`` (teacher cost / model cost, > 0) and ``fid_ratio`` (> 0)."""

    label: str
    reduction: float
    fid_ratio: float
    group: str = ""


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of the points (reduction, fid_ratio) no other point dominates: higher or equal
    reduction and lower or equal FID ratio, one of them strictly. Equal points are all on the front."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(ox >= x and oy <= y and (ox > x or oy < y) for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def read_frontier(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The rows of every frontier json (``{"rows": [{"label", "macs_x", "bytes_x", "fid_ratio", ...}], ...}``),
    each with ``group`` = its file's teacher without ``zoo:`` (or the file name) and ``feature_space``; ConfigError for a file
    without rows or with a row missing a field."""
    rows = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise ConfigError(f"{path}: a frontier json needs a 'rows' list")
        for r in data["rows"]:
            missing = [k for k in ("label", "macs_x", "bytes_x", "fid_ratio") if r.get(k) is None]
            if missing:
                raise ConfigError(f"{path}: row {r.get('label', '?')!r} has no {', '.join(missing)}")
            rows.append({**r, "group": str(data.get("teacher") or Path(path).stem).removeprefix("zoo:"),
                         "feature_space": data.get("feature_space")})
    return rows


def points_of(rows: Sequence[dict[str, Any]], key: str) -> list[Point]:
    """Frontier rows -> Points on the axis ``key`` (``macs_x`` or ``bytes_x``); rows without it are left out."""
    return [Point(str(r["label"]), float(r[key]), float(r["fid_ratio"]), str(r.get("group", "")))
            for r in rows if r.get(key) is not None and r.get("fid_ratio") is not None]


def draw_front(ax: Any, points: Sequence[Point], xlabel: str, *, ylabel: str = "FID / teacher (lower is better)") -> list[int]:
    """Scatter ``points`` on a matplotlib Axes (log x), the Pareto front filled and joined by a step line,
    dominated points hollow, every point labelled; a dashed line at FID ratio 1. Each group (teacher) has a
    front of its own: an FID ratio is relative to its own teacher, so models of different teachers do not
    dominate one another. Returns the indices on a front."""
    from matplotlib.ticker import FuncFormatter

    groups = sorted({p.group for p in points})
    members = {g: [i for i, p in enumerate(points) if p.group == g] for g in groups}
    fronts = {g: [idx[j] for j in pareto_front([(points[i].reduction, points[i].fid_ratio) for i in idx])]
              for g, idx in members.items()}
    front = sorted(i for f in fronts.values() for i in f)
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    names: dict[tuple[float, float], list[str]] = {}
    for i, p in enumerate(points):
        on = i in front
        ax.scatter([p.reduction], [p.fid_ratio], s=42, zorder=3, color=colours[p.group] if on else "none",
                   edgecolors=colours[p.group], linewidths=1.2, label=p.group if p.group else None)
        names.setdefault((p.reduction, p.fid_ratio), []).append(p.label)
    for (x, y), labels in names.items():  # points at the same place share one label
        ax.annotate(", ".join(labels), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    for g, f in fronts.items():  # the best FID ratio reachable at each reduction: y of the next front point to the right
        line = sorted((points[i].reduction, points[i].fid_ratio) for i in f)
        ax.step([x for x, _ in line], [y for _, y in line], where="pre", color=colours[g], lw=1.0, zorder=2,
                label="Pareto front")
    ax.axhline(1.0, color="0.6", ls="--", lw=0.8, zorder=1)
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(xlabel + " (log)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))  # one legend entry per group
    if len(seen) > 1:
        ax.legend(seen.values(), seen.keys(), fontsize=7, loc="best")
    return front


def plot_frontier(rows: Sequence[dict[str, Any]], title: str = "") -> Any:
    """A matplotlib Figure: FID / teacher against MACs x (left) and bytes x (right), fronts marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(AXES), figsize=(11, 4.2))
    for ax, (key, label) in zip(axes, AXES, strict=True):
        draw_front(ax, points_of(rows, key), label)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def summary_points(summary: Sequence[dict[str, Any]], key: str) -> list[Point]:
    """A run's summary.json rows (teacher first) -> Points on the cost ``key`` (``macs``, ``weight_bytes``,
    ``latency_ms_b64``): reduction = teacher's / step's, FID ratio = step's FID / teacher's (same space, n, seed)."""
    teacher = summary[0] if summary else {}
    if not teacher.get(key) or not teacher.get("fid"):
        return []
    return [Point(str(r["step"]), teacher[key] / r[key], r["fid"] / teacher["fid"])
            for r in summary if r.get(key) and r.get("fid") is not None]

"""Pareto fronts and plots: the front of (reduction, FID ratio) points, bench/pareto.py on synthetic
frontier json files, and the comparison report of several sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.pareto import write_pareto
from slimgen.errors import ConfigError
from slimgen.report import pareto_front, read_frontier, write_frontier_report
from slimgen.report.pareto import points_of, summary_points


def test_front_of_a_known_set() -> None:
    pts = [(1.0, 1.0), (4.0, 1.05), (3.0, 1.10), (10.0, 1.30), (10.0, 1.50), (20.0, 2.0), (2.0, 1.0)]
    # (3, 1.10) loses to (4, 1.05); (10, 1.50) to (10, 1.30); (1, 1.0) to (2, 1.0)
    assert pareto_front(pts) == [1, 3, 5, 6]
    assert pareto_front([(5.0, 1.2), (5.0, 1.2)]) == [0, 1]  # equal points are both on it
    assert pareto_front([]) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 100), st.floats(0.5, 3)), min_size=1, max_size=12))
def test_front_is_exactly_the_undominated_points(pts: list[tuple[float, float]]) -> None:
    front = set(pareto_front(pts))
    assert front  # a finite set always has an undominated point
    for i, (x, y) in enumerate(pts):
        beaten = any(ox >= x and oy <= y and (ox, oy) != (x, y) for ox, oy in pts)
        assert (i in front) == (not beaten)


def _frontier_json(path: Path, teacher: str, rows: list[tuple[str, float, float, float]]) -> Path:
    data = {"machine": "x86_64", "threads": 1, "load": 0.5, "feature_space": "zoo:fmnist-eval", "n": 10000,
            "seeds": [0, 1, 2, 3, 4], "teacher": teacher,
            "rows": [{"recipe": f"recipes/{label}.yaml", "label": label, "macs_x": m, "bytes_x": b, "fid_ratio": f,
                      "fid_ratio_seeds": [f] * 5, "precision": 0.5, "recall": 0.7, "psnr_db": 25.0, "wall_s": 60.0}
                     for label, m, b, f in rows]}
    path.write_text(json.dumps(data))
    return path


def test_bench_pareto_reads_every_frontier_json_and_writes_png_and_svg(tmp_path: Path) -> None:
    _frontier_json(tmp_path / "frontier.json", "zoo:dcgan-fmnist",
                   [("default", 10.5, 22.0, 1.18), ("frontier", 21.0, 55.0, 1.09), ("dominated", 8.0, 20.0, 1.3)])
    _frontier_json(tmp_path / "frontier_vae.json", "zoo:vae-fmnist", [("vae-int8", 3.7, 7.5, 1.08)])
    (tmp_path / "other.json").write_text("{}")  # not a frontier file: not read
    written = write_pareto(tmp_path, tmp_path / "pareto")
    assert [p.name for p in written] == ["pareto.png", "pareto.svg"]
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "pareto.svg").read_text()
    assert "<svg" in svg and all(label in svg for label in ("frontier", "dominated", "vae-int8"))
    rows = read_frontier(sorted(tmp_path.glob("frontier*.json")))
    assert {r["group"] for r in rows} == {"dcgan-fmnist", "vae-fmnist"}
    macs = points_of(rows, "macs_x")
    assert [macs[i].label for i in pareto_front([(p.reduction, p.fid_ratio) for p in macs])] == [
        "frontier", "vae-int8"]  # (10.5, 1.18) and (8, 1.3) are beaten by (21, 1.09); (3.7, 1.08) is not


def test_frontier_json_without_rows_or_fields_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"teacher": "t"}))
    with pytest.raises(ConfigError, match="needs a 'rows' list"):
        read_frontier([tmp_path / "a.json"])
    (tmp_path / "b.json").write_text(json.dumps({"rows": [{"label": "x", "macs_x": 2.0, "fid_ratio": 1.1}]}))
    with pytest.raises(ConfigError, match="'x' has no bytes_x"):
        read_frontier([tmp_path / "b.json"])


def test_summary_points_are_ratios_to_the_teacher_row() -> None:
    summary = [{"step": "00-teacher", "macs": 100, "weight_bytes": 1000, "fid": 2.0},
               {"step": "01-prune", "macs": 25, "weight_bytes": 500, "fid": 3.0},
               {"step": "02-quantize", "macs": 25, "weight_bytes": 125, "fid": None}]
    pts = summary_points(summary, "macs")
    assert [(p.label, p.reduction, p.fid_ratio) for p in pts] == [("00-teacher", 1.0, 1.0), ("01-prune", 4.0, 1.5)]
    assert summary_points(summary, "latency_ms_b64") == []


def test_comparison_report_of_runs_and_a_frontier_json(tmp_path: Path) -> None:
    for name, final in (("run-a", {"macs": 10, "weight_bytes": 50, "fid": 2.2}),
                        ("run-b", {"macs": 40, "weight_bytes": 100, "fid": 2.1})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps([
            {"step": "00-teacher", "macs": 100, "weight_bytes": 1000, "fid": 2.0, "model": "/x/zoo/dcgan-fmnist",
             "extractor": "fmnist-eval", "n": 2000, "seed": 0}, {"step": "01-x", **final}]))
    js = _frontier_json(tmp_path / "frontier.json", "zoo:dcgan-fmnist", [("frontier", 21.0, 55.0, 1.09)])
    out = write_frontier_report([tmp_path / "run-a", tmp_path / "run-b", js], tmp_path / "cmp.html")
    page = out.read_text()
    assert page.count("data:image/png;base64,") == 1
    assert all(s in page for s in ("run-a", "run-b", "frontier", "<td>10.0</td>", "<td>1.100</td>"))


def test_each_teacher_has_a_front_of_its_own() -> None:
    """An FID ratio is relative to its own teacher: a VAE row that is better on both axes does not push a
    DCGAN row off the DCGAN's front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimgen.report.pareto import Point, draw_front

    points = [Point("dcgan-a", 2.0, 1.3, "dcgan"), Point("dcgan-b", 1.5, 1.4, "dcgan"),
              Point("vae-a", 4.0, 1.1, "vae")]
    fig, ax = plt.subplots()
    try:
        assert draw_front(ax, points, "MACs x") == [0, 2]  # dcgan-b is dominated by dcgan-a only
    finally:
        plt.close(fig)

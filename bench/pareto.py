"""Pareto plot of every frontier table -> bench/results/pareto.png and pareto.svg.

    .venv/bin/python bench/pareto.py [--results bench/results] [--out bench/results/pareto]

Reads every ``frontier*.json`` in ``--results`` (``bench/bench_frontier.py``'s schema: ``rows`` with
``label``, ``macs_x``, ``bytes_x`` and ``fid_ratio``, the mean FID / teacher over the file's latent
seeds in its feature space) and plots FID / teacher against MACs x and stored bytes x fewer than the
teacher (log x), one colour per teacher, the Pareto front filled and joined, dominated rows hollow
(``slimgen.report.pareto``; ``slimgen report`` draws the same plot for the runs it is given).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slimgen.report.pareto import plot_frontier, read_frontier

ROOT = Path(__file__).resolve().parent


def write_pareto(results: Path, out: Path) -> list[Path]:
    """Plot the rows of ``results/frontier*.json`` into OUT.png and OUT.svg; returns the files written."""
    import matplotlib.pyplot as plt

    sources = sorted(results.glob("frontier*.json"))
    if not sources:
        raise SystemExit(f"no frontier*.json in {results}")
    rows = read_frontier(sources)
    spaces = sorted({str(r.get("feature_space")) for r in rows})
    fig = plot_frontier(rows, title=f"FID / teacher in {', '.join(spaces)} (means over latent seeds) vs cost; "
                                    f"from {', '.join(p.name for p in sources)}")
    written = []
    for ext in ("png", "svg"):
        path = out.with_suffix(f".{ext}")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "pareto", help="writes OUT.png and OUT.svg")
    args = ap.parse_args()
    for path in write_pareto(args.results, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Time ``slimgen.evaluate.evaluate`` at several N, with a breakdown by stage -> bench/results/evaluate_speed.md.

    .venv/bin/python bench/bench_evaluate_speed.py [--model zoo:dcgan-fmnist] [--ns 1000 2000 5000 10000]
        [--threads 2] [--repeats 3]

Each run is the real ``evaluate()`` call (both feature spaces, cost and latency included, as
``slimgen evaluate`` runs it) under cProfile; a stage's seconds are the cumulative time of the
library function that does it (generation, feature extraction in every space, FID, KID,
precision/recall, the real set's cached features, cost). Runs of different N take turns, so a
burst of load hits every N alike; a stage's figure is its median over the repeats. One more run
at the largest N starts from an empty cache (the real set's features extracted and stored) and
must give the same numbers as the warm runs.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import itertools
import os
import platform
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch

from slimgen.evaluate import evaluate
from slimgen.runtime.bench import load_average

RESULTS = Path(__file__).resolve().parent / "results" / "evaluate_speed.md"
# stage -> (file suffix, function name[, a caller whose share is left out]) whose cumulative time it is
STAGES = {
    "generation (the model, batches of 500)": ("slimgen/models/adapter.py", "generate"),
    "feature extraction of the generated images, both spaces": ("slimgen/evaluate/features.py", "extract_batches",
                                                                "concat"),  # concat: the real set's, under extract()
    "real set's features (read from the disk cache; empty cache: extracted, k-NN radii, stored)":
        ("slimgen/evaluate/reference.py", "reference_features"),
    "FID (torchmetrics)": ("slimgen/evaluate/quality.py", "fid"),
    "KID, 100 subsets x 1,000 (torchmetrics)": ("slimgen/evaluate/quality.py", "kid"),
    "precision/recall, k = 3 (all N x 10,000 pairs)": ("slimgen/evaluate/quality.py", "precision_recall"),
    "cost: params, MACs, latency b1/b64": ("slimgen/evaluate/cost.py", "measure_cost"),
}


def profiled(model: str, n: int) -> tuple[dict[str, float], float, object]:
    """(seconds per stage, total wall seconds, result) of one evaluate() run."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    result = evaluate(model, n=n, seed=0, write=False)
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    stages = {}
    for stage, (suffix, func, *caller) in STAGES.items():
        found = [v for (file, _, name), v in stats.items() if file.endswith(suffix) and name == func]
        stages[stage] = sum(v[3] for v in found)
        if caller:  # minus the time spent under that caller (cProfile's per-caller cumulative time, index 3)
            stages[stage] -= sum(c[3] for v in found for (_, _, who), c in v[4].items() if who == caller[0])
    return stages, total, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zoo:dcgan-fmnist")
    ap.add_argument("--ns", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = load_average()
    profiled(args.model, min(args.ns))  # imports, the extractors' first load, a warm reference cache
    runs: dict[int, list[tuple[dict[str, float], float, object]]] = {n: [] for n in args.ns}
    for _ in range(args.repeats):
        for n in args.ns:
            runs[n].append(profiled(args.model, n))
            print(n, round(runs[n][-1][1], 2), flush=True)
    warm_cache = os.environ.get("SLIMGEN_CACHE")
    with tempfile.TemporaryDirectory(prefix="slimgen-cold-") as cold:
        os.environ["SLIMGEN_CACHE"] = cold
        cold_stages, cold_total, cold_result = profiled(args.model, max(args.ns))
    if warm_cache is None:
        os.environ.pop("SLIMGEN_CACHE")
    else:
        os.environ["SLIMGEN_CACHE"] = warm_cache
    warm_result = runs[max(args.ns)][0][2]
    same = {k: abs(getattr(cold_result, k) - getattr(warm_result, k)) / abs(getattr(warm_result, k))
            for k in ("fid", "kid_mean", "precision", "recall", "train_fid")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args, runs, (cold_stages, cold_total), same, load_before), encoding="utf-8")
    print(args.out.read_text())


def render(args: argparse.Namespace, runs: dict, cold: tuple[dict[str, float], float], same: dict[str, float],
           load_before: str) -> str:
    ns = args.ns
    med = {n: {s: statistics.median(r[0][s] for r in runs[n]) for s in STAGES} for n in ns}
    tot = {n: statistics.median(r[1] for r in runs[n]) for n in ns}
    result = runs[max(ns)][0][2]
    head = "| stage (seconds) | " + " | ".join(f"N = {n:,}" for n in ns) + f" | N = {max(ns):,}, empty cache |"
    lines = [
        "# Evaluation speed", "",
        f"`{args.model}`: `slimgen.evaluate.evaluate(model, n=N, seed=0)` as `slimgen evaluate` runs it: N generated "
        f"samples against the 10,000 Fashion-MNIST test images in the reporting space ({result.extractor}) and the "
        f"training space ({result.training_space['extractor'] if result.training_space else '-'}), FID, KID, "
        "precision/recall, IS-style score, fidelity-free (no teacher), cost and latency included.", "",
        f"{platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {args.threads} threads; "
        f"{dt.datetime.now(dt.UTC).isoformat(timespec='minutes')}. Load average before: {load_before}; after: "
        f"{load_average()}. Command: `.venv/bin/python bench/bench_evaluate_speed.py --threads {args.threads} "
        f"--repeats {args.repeats} --ns {' '.join(map(str, ns))}`. Median of {args.repeats} runs per N, the N taking "
        "turns; stage times are "
        "cProfile's cumulative seconds of the function named in `bench_evaluate_speed.STAGES`.", "",
        head, "| --- |" + " ---: |" * (len(ns) + 1),
    ]
    for s in STAGES:
        lines.append(f"| {s} | " + " | ".join(f"{med[n][s]:.2f}" for n in ns) + f" | {cold[0][s]:.2f} |")
    other = {n: tot[n] - sum(med[n].values()) for n in ns}
    lines.append("| everything else (loading, per-call overhead) | " + " | ".join(f"{other[n]:.2f}" for n in ns)
                 + f" | {cold[1] - sum(cold[0].values()):.2f} |")
    lines.append("| **total, wall** | " + " | ".join(f"**{tot[n]:.2f}**" for n in ns) + f" | **{cold[1]:.2f}** |")
    lines.append("| seconds per 1,000 samples | " + " | ".join(f"{1000 * tot[n] / n:.2f}" for n in ns) + " | |")
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in same.items())
    pr = "precision/recall, k = 3 (all N x 10,000 pairs)"
    lines.append("| seconds per additional 1,000 samples (from the previous N) | - | " + " | ".join(
        f"{1000 * (tot[b] - tot[a]) / (b - a):.2f}" for a, b in itertools.pairwise(ns)) + " | |")
    a, b = ns[-2], ns[-1]
    lines += ["", "Linear growth: the marginal cost per 1,000 samples (last row) stays flat while the fixed cost (KID's "
              "100 subsets of 1,000, the cost table, loading) is spread over more samples. Only precision/recall grows "
              f"faster than N ({med[b][pr] / max(med[a][pr], 1e-9):.1f}x from N = {a:,} to {b:,}): the generated set's "
              "k-NN radii compare all N x N generated pairs, as the metric (Kynkaanniemi et al. 2019) defines them."]
    lines += ["", f"Empty cache vs warm cache at N = {max(ns):,}, largest relative difference: {diffs} (0 when the cache "
              "was written with the same thread count; otherwise the convolutions' summation order differs in the last "
              "float bits).", "",
              f"Result at N = {max(ns):,}: reporting-space FID {result.fid:.3f}, KID {result.kid_mean:.5f}, precision "
              f"{result.precision:.3f}, recall {result.recall:.3f}; training-space FID {result.train_fid:.3f}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

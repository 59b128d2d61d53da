"""Time a full evaluation (default: 10,000 samples of zoo:dcgan-fmnist) and write bench/results/evaluate.md.

    .venv/bin/python bench/bench_evaluate.py [--model zoo:dcgan-fmnist] [-n 10000] [--threads 1,2]

Stages are timed apart (sampling, feature extraction, metrics, cost) and then together
through ``slimgen.evaluate.evaluate`` with a warm reference cache, which is how it runs in a loop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from slimgen.evaluate import evaluate, extract, measure_cost, measure_quality, reference_features
from slimgen.evaluate.features import load_extractor
from slimgen.evaluate.reference import PR_K
from slimgen.models import generate_all, load_folder, sample_latents

RESULTS = Path(__file__).resolve().parent / "results" / "evaluate.md"


def _timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _stages(bundle, ext, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Seconds of: cold reference, sampling, extraction, metrics, cost (one thread setting)."""
    os.environ["SLIMGEN_CACHE"] = tempfile.mkdtemp(prefix="slimgen-bench-")  # a cold cache we can time
    ref, t_ref = _timed(lambda: reference_features(ext))
    z = sample_latents(n, bundle.latent_dim, seed=0)
    images, t_sample = _timed(lambda: generate_all(bundle.generator, z))
    fake, t_extract = _timed(lambda: extract(ext, images))
    _, t_metrics = _timed(lambda: measure_quality(ref.features, fake, k=PR_K, real_radii=ref.radii))
    _, t_cost = _timed(lambda: measure_cost(bundle.generator, bundle.latent_dim, folder=bundle.path))
    return [t_ref, t_sample, t_extract, t_metrics, t_cost]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="zoo:dcgan-fmnist")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to compare")
    ap.add_argument("--repeats", type=int, default=3, help="full evaluations timed per thread count")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    bundle = load_folder(args.model)
    ext = load_extractor(None)
    load_before = os.getloadavg()[0]
    stages, totals = {}, {t: [] for t in threads}
    for t in threads:
        torch.set_num_threads(t)
        stages[t] = _stages(bundle, ext, args.n)
    for _ in range(args.repeats):  # alternate thread counts so both see the same machine load
        for t in threads:
            torch.set_num_threads(t)
            result, seconds = _timed(lambda: evaluate(bundle, n=args.n, seed=0, write=False))
            totals[t].append(seconds)
    load_after = os.getloadavg()[0]

    names = [
        "reference features, cold cache (10,000 test images, once per extractor)",
        f"sampling {args.n:,} images",
        f"extracting features of {args.n:,} images",
        "FID + KID (100 x 1000) + precision/recall (k=3) + IS-style score",
        "cost: params, MACs, latency batch 1 and 64 (median of 20 after 3 warm-up)",
    ]
    rows = [[name, *(f"{stages[t][i]:.2f}" for t in threads)] for i, name in enumerate(names)]
    rows += [[f"**`evaluate()` total, {args.n:,} samples, warm reference cache, run {r + 1}**",
              *(f"{totals[t][r]:.2f}" for t in threads)] for r in range(args.repeats)]
    rows.append(["**median of the full runs**", *(f"**{statistics.median(totals[t]):.1f}**" for t in threads)])
    lines = [
        "# Evaluation time",
        "",
        f"`{args.model}`, {args.n:,} generated samples against the Fashion-MNIST test set (10,000), "
        f"features of `{result.extractor}` ({result.extractor_hash}), seed 0, latency included.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__} (CPU); {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}. "
        f"Run: `.venv/bin/python bench/bench_evaluate.py --threads {args.threads}`.",
        "",
        "| stage (seconds) | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |",
        "| --- |" + " ---: |" * len(threads),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "Target: under 60 s for 10,000 samples including sampling. The two cores were shared with other "
        f"jobs (load average {load_before:.1f} before, {load_after:.1f} after): with more runnable threads "
        "than cores, two torch threads wait on each other at every parallel region, so one thread can be "
        "faster on a busy machine. Not measured on an idle machine.",
        "",
        f"Result: FID {result.fid:.3f}, KID {result.kid_mean:.5f} ± {result.kid_std:.5f}, "
        f"precision {result.precision:.3f}, recall {result.recall:.3f}, IS-style {result.inception_score:.3f}, "
        f"{result.macs:,} MACs per image, {result.params:,} parameters.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Time of a recipe run's evaluations with and without the in-process evaluation memo, in one process.

    .venv/bin/python bench/bench_eval_memo.py RUN_FOLDER [--threads 2] [--rounds 1] [--out bench/results/eval_memo]

RUN_FOLDER is a finished ``slimgen compress`` run (e.g. `make demo`'s runs/demo). Each round evaluates every
step folder of it as the runner does (``slimgen.pipeline.runner``: the recipe's ``evaluate`` settings, the
teacher as the reference for fidelity, and the exported ONNX model's own quality where a step exported one),
once with ``SLIMGEN_EVAL_MEMO=0`` and once with the memo on (emptied first), alternating, so both see the same
load. It checks that both give the same numbers (every field but the time) and reports the seconds of each.
The memo (slimgen/evaluate/memo.py) computes the teacher's samples, their features and the noise floor once
per run instead of once per step, and an unchanged model (the export step's, the quantize step's) once.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from bench_frontier import generated_by, write_state  # bench/ is on sys.path when a bench script runs

from slimgen.evaluate.memo import MEMO
from slimgen.export.onnx import ONNX_NAME
from slimgen.io import read_json
from slimgen.models import load_folder
from slimgen.pipeline import load_recipe
from slimgen.pipeline.runner import RECIPE_COPY, SUMMARY, _evaluate_row, _onnx_quality

ROOT = Path(__file__).resolve().parent


def evaluate_run(run: Path) -> tuple[float, list[dict]]:
    """Seconds and rows of evaluating every step of ``run`` as the runner does."""
    recipe = load_recipe(run / RECIPE_COPY)
    steps = [r["step"] for r in read_json(run / SUMMARY)]
    teacher = load_folder(run / steps[0])
    rows = []
    t0 = time.perf_counter()
    for name in steps:
        bundle = load_folder(run / name)
        row = _evaluate_row(bundle, teacher, recipe, name)
        if (run / name / ONNX_NAME).is_file():
            row.update(_onnx_quality(bundle, run / name / ONNX_NAME, teacher, recipe))
        rows.append({k: v for k, v in row.items() if k != "seconds"})
    return time.perf_counter() - t0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "eval_memo")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    same = True
    for _ in range(args.rounds):
        results = {}
        for mode in ("off", "on"):
            os.environ["SLIMGEN_EVAL_MEMO"] = "0" if mode == "off" else "1"
            MEMO.clear()
            s, rows = evaluate_run(args.run)
            seconds[mode].append(round(s, 1))
            results[mode] = rows
        same = same and results["off"] == results["on"]
    steps = len(results["on"])
    state = {"run": str(args.run), "steps": steps, "seconds": seconds, "same_numbers": same}
    write_state(args.out.with_suffix(".json"), state, threads=args.threads, rounds=args.rounds)
    off, on = min(seconds["off"]), min(seconds["on"])
    recipe = load_recipe(args.run / RECIPE_COPY)
    lines = ["# A run's evaluations with and without the in-process memo", "", generated_by("bench_eval_memo.py", state),
             f"Run `{args.run}`: {steps} step folders, each evaluated as the runner does (n = {recipe.evaluate.n}, "
             f"latent seed {recipe.evaluate.seed}, its teacher for fidelity; the exported ONNX model too where a step "
             f"has one); {args.rounds} round(s), memo off then on, in one process; fastest round of each.", "",
             "| memo | seconds (every round) | fastest |", "| --- | --- | ---: |",
             f"| off (`SLIMGEN_EVAL_MEMO=0`) | {', '.join(map(str, seconds['off']))} | {off:.1f} |",
             f"| on (default) | {', '.join(map(str, seconds['on']))} | {on:.1f} |", "",
             f"Same numbers with and without the memo (every field but the time): **{same}**. On / off: "
             f"{on / off:.2f} ({off - on:.0f} s less per run of this recipe).", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

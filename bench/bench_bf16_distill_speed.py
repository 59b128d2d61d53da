"""Time of one distillation step in fp32 and with bf16 autocast, the compact recipe's losses, in one process.

    .venv/bin/python bench/bench_bf16_distill_speed.py [--threads 2] [--steps 150] [--rounds 4]
        [--out bench/results/bf16_distill_speed]

The student is the zoo teacher with 72% of its channels pruned (first-order Taylor importance, widths
[35, 17], as recipes/compact.yaml); each round distils it from the same start for ``--steps`` steps of
batch 64 with the compact recipe's losses (output L1 x10, feature x1, the teacher's discriminator x0.05,
trained alongside) once in fp32 and once with ``precision: bf16`` (autocast; weights and optimizer
state float32), alternating, so both see the same load. ms per step: the median over rounds of the
whole call (set-up included, the same for both) over ``--steps``. Speed only: quality of bf16 training
is bench/results/bf16_training.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from bench_frontier import generated_by, write_state  # bench/ is on sys.path when a bench script runs

from slimgen.data import load_dataset
from slimgen.distill import Distillation, distill
from slimgen.models import load_folder
from slimgen.prune import ChannelPruning, prune

ROOT = Path(__file__).resolve().parent
LOSSES = {"output": 10.0, "feature": 1.0, "adversarial": 0.05}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bf16_distill_speed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_folder("zoo:dcgan-fmnist")
    student = prune(teacher, ChannelPruning(ratio=0.72, importance="taylor"))
    data = load_dataset("fashion-mnist")
    ms: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for precision in ms:
            config = Distillation(epochs=1, steps_per_epoch=args.steps, precision=precision, losses=LOSSES)
            t0 = time.perf_counter()
            distill(student, teacher, config, data=data, device="cpu")
            ms[precision].append((time.perf_counter() - t0) * 1000 / args.steps)
    state = {"ms_per_step": ms, "median": {k: statistics.median(v) for k, v in ms.items()}}
    write_state(args.out.with_suffix(".json"), state, threads=args.threads, steps=args.steps, rounds=args.rounds)
    med = state["median"]
    lines = ["# Distillation step time: fp32 vs bf16 autocast", "", generated_by("bench_bf16_distill_speed.py", state),
             f"Student widths [35, 17] (recipes/compact.yaml's), batch 64, losses {LOSSES}; {args.rounds} rounds of "
             f"{args.steps} steps per precision, alternating in one process; median over rounds.", "",
             "| precision | ms per step (median) | every round |", "| --- | ---: | --- |"]
    lines += [f"| {k} | {med[k]:.1f} | {', '.join(f'{v:.1f}' for v in ms[k])} |" for k in ms]
    lines += ["", f"bf16 / fp32 step time: {med['bf16'] / med['fp32']:.2f} (a bf16 step is {med['fp32'] / med['bf16']:.2f}x "
              "faster). Quality of the same choice: bench/results/bf16_training.md; 20,000 bf16 steps as the compact "
              "recipe: bench/results/distill_terms.md.", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

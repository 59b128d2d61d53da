"""Distillation step time with the adversarial term on every N-th step only (``adversarial_every``).

    .venv/bin/python bench/bench_adversarial_every.py [--threads 2] [--steps 90] [--rounds 3]
        [--out bench/results/adversarial_every_speed]

The discriminator is most of a distillation step's cost on a small student (the teacher's discriminator's
64 -> 128 4x4 stride-2 conv alone is about half of it: three forward and three backward calls a step). With
``adversarial_every: N`` the critic's step and the student's adversarial term run on steps 0, N, 2N, ... only,
weighted N times there. The student is recipes/default.yaml's before distillation; each round distils it from
the same start for ``--steps`` steps of batch 64 with the default recipe's losses in fp32 (no best-epoch scoring),
once per arm, the arms alternating in one process so all see the same load. ms per step: the median over rounds
of the whole call (set-up included, the same for every arm) over ``--steps``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from bench_adversarial_step import LOSSES, default_student  # bench/ is on sys.path when a bench script runs
from bench_frontier import generated_by, write_state

from slimgen.data import load_dataset
from slimgen.distill import Distillation, distill
from slimgen.models import load_folder

ROOT = Path(__file__).resolve().parent
ARMS = (1, 2, 3, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=90)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "adversarial_every_speed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_folder("zoo:dcgan-fmnist")
    student = default_student(teacher)
    data = load_dataset("fashion-mnist")
    ms: dict[int, list[float]] = {n: [] for n in ARMS}
    for _ in range(args.rounds):
        for n in ARMS:
            config = Distillation(epochs=1, steps_per_epoch=args.steps, precision="fp32",
                                  losses={**LOSSES, "adversarial_every": n})
            t0 = time.perf_counter()
            distill(student, teacher, config, data=data, device="cpu")  # no score: no best-epoch sampling
            ms[n].append((time.perf_counter() - t0) * 1000 / args.steps)
    med = {n: statistics.median(v) for n, v in ms.items()}
    state = {"ms_per_step": {str(n): v for n, v in ms.items()}, "median": {str(n): v for n, v in med.items()}}
    write_state(args.out.with_suffix(".json"), state, threads=args.threads, steps=args.steps, rounds=args.rounds)
    lines = ["# Distillation step time with the adversarial term on every N-th step", "",
             generated_by("bench_adversarial_every.py", state),
             f"recipes/default.yaml's student, batch 64, fp32, losses {LOSSES} plus `adversarial_every: N`; "
             f"{args.rounds} rounds of {args.steps} steps per arm, alternating in one process; median over rounds.", "",
             "| N | ms per step (median) | x faster than N = 1 | every round |", "| ---: | ---: | ---: | --- |"]
    lines += [f"| {n} | {med[n]:.1f} | {med[1] / med[n]:.2f} | {', '.join(f'{v:.1f}' for v in ms[n])} |" for n in ARMS]
    args.out.with_suffix(".md").write_text("\n".join([*lines, ""]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Distillation step time with and without the discriminator's parameter gradients in the generator's term.

    .venv/bin/python bench/bench_adversarial_step.py [--threads 2] [--steps 100] [--rounds 4]
        [--out bench/results/adversarial_step]

The adversarial term scores the student's images with the discriminator, and only the gradient to
those images reaches the student. Until 2026-12-04 that pass also computed the discriminator's own
weight gradients, which its optimizer cleared before they were ever used
(:func:`slimgen.train.objectives.input_gradients_only` now keeps them out of the graph). Arm
``before`` puts that back (the context replaced by a no-op), arm ``now`` is the code as it is.

The student is recipes/default.yaml's before distillation (half the channels by first-order Taylor
importance, the 4x4 stride-2 layer cropped to 2x2, the latent layer at rank 32); each round distils it
from the same start for ``--steps`` steps of batch 64 with the default recipe's losses, once per arm,
alternating in one process so both see the same load. ms per step: the median over rounds of the
whole call (set-up included, the same for both) over ``--steps``. The two arms' distilled students
are compared weight by weight: the change must not alter training.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from unittest import mock

import torch
from bench_frontier import generated_by, write_state  # bench/ is on sys.path when a bench script runs

from slimgen.data import load_dataset
from slimgen.distill import Distillation, distill
from slimgen.models import ModelBundle, load_folder
from slimgen.prune import ChannelPruning, KernelPruning, LowRankFactorization, prune

ROOT = Path(__file__).resolve().parent
LOSSES = {"output": 10.0, "feature": 1.0, "adversarial": 0.05}


def default_student(teacher: ModelBundle) -> ModelBundle:
    student = prune(teacher, ChannelPruning(ratio=0.5, importance="taylor"))
    student = prune(student, KernelPruning(size=2))
    return prune(student, LowRankFactorization(rank=32, layers=("<first>",)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "adversarial_step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_folder("zoo:dcgan-fmnist")
    student = default_student(teacher)
    data = load_dataset("fashion-mnist")
    arms = {"before": lambda module: contextlib.nullcontext(), "now": None}
    ms: dict[str, list[float]] = {k: [] for k in arms}
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for _ in range(args.rounds):
        for arm, patch in arms.items():
            config = Distillation(epochs=1, steps_per_epoch=args.steps, precision="fp32", losses=LOSSES)
            ctx = (mock.patch("slimgen.train.objectives.input_gradients_only", patch) if patch is not None
                   else contextlib.nullcontext())
            with ctx:
                t0 = time.perf_counter()
                out = distill(student, teacher, config, data=data, device="cpu")
                ms[arm].append((time.perf_counter() - t0) * 1000 / args.steps)
            weights[arm] = out.generator.state_dict()
    same = all(torch.equal(weights["before"][k], weights["now"][k]) for k in weights["now"])
    state = {"ms_per_step": ms, "median": {k: statistics.median(v) for k, v in ms.items()}, "same_weights": same}
    write_state(args.out.with_suffix(".json"), state, threads=args.threads, steps=args.steps, rounds=args.rounds)
    med = state["median"]
    lines = ["# Distillation step time: the discriminator's parameter gradients in the generator's term", "",
             generated_by("bench_adversarial_step.py", state),
             f"recipes/default.yaml's student, batch 64, fp32, losses {LOSSES}; {args.rounds} rounds of {args.steps} "
             "steps per arm, alternating in one process; median over rounds. `before`: the generator's adversarial "
             "pass also built the discriminator's weight gradients (dropped unused); `now`: gradients to the images "
             "only.", "",
             "| arm | ms per step (median) | every round |", "| --- | ---: | --- |"]
    lines += [f"| {k} | {med[k]:.1f} | {', '.join(f'{v:.1f}' for v in ms[k])} |" for k in ms]
    lines += ["", f"A step now takes {med['now'] / med['before']:.2f} of the time it took ({med['before'] / med['now']:.2f}x "
              f"faster). The two arms' distilled students are {'bit for bit the same' if same else 'DIFFERENT'}.", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

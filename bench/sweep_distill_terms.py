"""Distillation terms on a hard student: which loss weights, schedules and tricks help a [48, 12] student of
zoo:dcgan-fmnist (11x fewer MACs) -> bench/results/distill_terms.md and distill_terms.json.

    .venv/bin/python bench/sweep_distill_terms.py [--only LABEL ...] [--runs runs/distill-terms] [--threads 1]

Every row is a chain of real ``slimgen`` CLI commands: prune the teacher's channels to widths [48, 12]
(``--ratio 0.8125 --layer-ratio net.0=0.625``, first-order Taylor importance; [35, 17] and [64, 8] rows
say so), then ``slimgen distill`` with the row's flags (batch 64, output L1 weight 10, cosine schedule
unless the row says otherwise). A command whose --out folder is complete is skipped, so a rerun resumes.
The final folder is scored like bench/bench_frontier.py: FID in the REPORTING space ``zoo:fmnist-eval``
(no training loss or selection uses it), n = 10,000 samples of latent seed 0 vs the 10,000 Fashion-MNIST
test images, as a ratio to the teacher's FID on the same latents (2.345); one seed and one training run
per row, so differences under ~0.05 are noise. Best-epoch selection scores in the training space.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bench_frontier import SPACE, generated_by, score, write_state  # bench/ is on sys.path when a bench script runs

ROOT = Path(__file__).resolve().parent
TEACHER = "zoo:dcgan-fmnist"
W48 = ["--ratio", "0.8125", "--layer-ratio", "net.0=0.625", "--importance", "taylor"]
W35 = ["--ratio", "0.72", "--importance", "taylor"]
W64 = ["--ratio", "0.875", "--layer-ratio", "net.0=0.5", "--importance", "taylor"]
BASE = ["--output", "10", "--lr-schedule", "cosine"]
E10 = ["--epochs", "10", "--steps-per-epoch", "300"]  # 3,000 steps
E12K = ["--epochs", "12", "--steps-per-epoch", "1000"]  # 12,000 steps
E40 = ["--epochs", "40", "--steps-per-epoch", "300"]  # 12,000 steps
E20K = ["--epochs", "20", "--steps-per-epoch", "1000"]  # 20,000 steps
E30K = ["--epochs", "20", "--steps-per-epoch", "1500"]  # 30,000 steps
BF16 = ["--precision", "bf16", "--eval-n", "1000"]  # bf16 autocast steps (AMX), selection on 1,000 samples
W24 = ["--ratio", "0.7", "--importance", "taylor", "--layer-ratio", "net.0=0.8125", "--layer-ratio", "net.3=0.625"]

# label -> (widths, prune flags, distill flags)
ROWS: dict[str, tuple[str, list[str], list[str]]] = {
    "base: lr 5e-4, feature 1, adversarial 0.05": ("[48, 12]", W48, [*E10, *BASE, "--lr", "5e-4", "--feature", "1",
                                                                    "--adversarial", "0.05"]),
    "+ EMA 0.999": ("[48, 12]", W48, [*E10, *BASE, "--lr", "5e-4", "--feature", "1", "--adversarial", "0.05",
                                      "--ema", "0.999"]),
    "+ perceptual 1 (training space)": ("[48, 12]", W48, [*E10, *BASE, "--lr", "5e-4", "--feature", "1",
                                                          "--adversarial", "0.05", "--perceptual", "1"]),
    "widths [64, 8]": ("[64, 8]", W64, [*E10, *BASE, "--lr", "5e-4", "--feature", "1", "--adversarial", "0.05"]),
    "lr 1e-3": ("[48, 12]", W48, [*E10, *BASE, "--lr", "1e-3", "--feature", "1", "--adversarial", "0.05"]),
    "feature 0": ("[48, 12]", W48, [*E10, *BASE, "--lr", "5e-4", "--feature", "0", "--adversarial", "0.05"]),
    "lr 1e-3, feature 5": ("[48, 12]", W48, [*E10, *BASE, "--lr", "1e-3", "--feature", "5", "--adversarial", "0.05"]),
    "lr 1e-3, no adversarial (data-free)": ("[48, 12]", W48, [*E10, *BASE, "--lr", "1e-3", "--feature", "1",
                                                              "--adversarial", "0"]),
    "lr 1e-3, feature 5, no adversarial": ("[48, 12]", W48, [*E10, *BASE, "--lr", "1e-3", "--feature", "5",
                                                             "--adversarial", "0"]),
    "lr 1e-3, feature 20, no adversarial": ("[48, 12]", W48, [*E10, *BASE, "--lr", "1e-3", "--feature", "20",
                                                              "--adversarial", "0"]),
    "12,000 steps: lr 5e-4, feature 1, adversarial 0.05": ("[48, 12]", W48, [*E40, *BASE, "--lr", "5e-4", "--feature",
                                                                             "1", "--adversarial", "0.05"]),
    "12,000 steps: lr 1e-3, feature 1, no adversarial": ("[48, 12]", W48, [*E12K, *BASE, "--lr", "1e-3", "--feature",
                                                                           "1", "--adversarial", "0"]),
    "12,000 steps: lr 5e-4, feature 5, adversarial 0.05": ("[48, 12]", W48, [*E12K, *BASE, "--lr", "5e-4",
                                                                             "--feature", "5", "--adversarial", "0.05"]),
    "12,000 steps, widths [35, 17]: lr 5e-4, feature 5, adversarial 0.05": (
        "[35, 17]", W35, [*E12K, *BASE, "--lr", "5e-4", "--feature", "5", "--adversarial", "0.05"]),
    "widths [35, 17]: lr 5e-4, feature 1, adversarial 0.05": (
        "[35, 17]", W35, [*E10, *BASE, "--lr", "5e-4", "--feature", "1", "--adversarial", "0.05"]),
    "widths [35, 17]: adversarial 0.25": (
        "[35, 17]", W35, [*E10, *BASE, "--lr", "5e-4", "--feature", "1", "--adversarial", "0.25"]),
    "widths [35, 17]: lr 1e-3, feature 5": (
        "[35, 17]", W35, [*E10, *BASE, "--lr", "1e-3", "--feature", "5", "--adversarial", "0.05"]),
    "widths [24, 24]: lr 5e-4, feature 1, adversarial 0.05": (
        "[24, 24]", W24, [*E10, *BASE, "--lr", "5e-4", "--feature", "1", "--adversarial", "0.05"]),
    "20,000 bf16 steps, widths [35, 17]: lr 5e-4, feature 1, adversarial 0.05": (
        "[35, 17]", W35, [*E20K, *BASE, "--lr", "5e-4", "--feature", "1", "--adversarial", "0.05", *BF16]),
    "30,000 bf16 steps, widths [35, 17]: lr 5e-4, feature 1, adversarial 0.05": (
        "[35, 17]", W35, [*E30K, *BASE, "--lr", "5e-4", "--feature", "1", "--adversarial", "0.05", *BF16]),
}


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")[:80]


def run_row(label: str, prune: list[str], flags: list[str], runs: Path, threads: int) -> tuple[Path, float]:
    """Prune (shared per width) then distill into runs/SLUG; the distilled folder and its distillation seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    student = runs / ("student" + "".join(p.replace(".", "").replace("=", "") for p in prune[1::2]))
    if not (student / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "slimgen", "prune", TEACHER, "--method", "channels", *prune, "--out",
                        str(student), "--overwrite"], check=True, env=env)
    out = runs / _slug(label)
    seconds = 0.0
    if not (out / "config.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "slimgen", "distill", TEACHER, "--student", str(student), "--out",
                        str(out), "--threads", str(threads), *flags, "--overwrite"], check=True, env=env)
        seconds = time.perf_counter() - t0
    return out, seconds


def render(state: dict[str, Any]) -> str:
    t = state["teacher_score"]
    lines = [
        "# Distillation terms on an 11x student", "",
        generated_by("sweep_distill_terms.py", state) + f" FID in the **reporting space** `{SPACE}`, n = 10,000 samples "
        f"of latent seed 0 vs the 10,000 Fashion-MNIST test images, as a ratio to the teacher's FID on the same latents "
        f"({t['fid']:.3f}; precision {t['precision']:.3f}, recall {t['recall']:.3f}). One seed, one training run per "
        "row: differences under ~0.05 are noise. Every row: `slimgen prune zoo:dcgan-fmnist --method channels PRUNE` "
        "then `slimgen distill zoo:dcgan-fmnist --student STUDENT FLAGS` (batch 64).", "",
        "| row | widths | distill flags | FID / teacher | precision | recall | distill time (s) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, (widths, _, flags) in ROWS.items():
        r = state["rows"].get(label)
        if r is None:
            lines.append(f"| {label} | {widths} | `{' '.join(flags)}` | not measured yet | - | - | - |")
            continue
        secs = "-" if not r.get("seconds") else f"{r['seconds']:.0f}"
        lines.append(f"| {label} | {widths} | `{' '.join(flags)}` | **{r['fid'] / t['fid']:.3f}** | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {secs} |")
    for note in state.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs/distill-terms"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="row labels to run; default all")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "distill_terms")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state_path = args.out.with_suffix(".json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"rows": {}}
    state.setdefault("threads", args.threads)
    if "teacher_score" not in state:
        state["teacher_score"] = score(TEACHER, None, n=10000, seed=0)
    for label, (_, prune, flags) in ROWS.items():
        if (args.only and label not in args.only) or (label in state["rows"] and state["rows"][label]["flags"] == flags):
            continue
        folder, seconds = run_row(label, prune, flags, args.runs, args.threads)
        state["rows"][label] = {**score(folder, None, n=10000, seed=0), "flags": flags, "prune": prune,
                                "seconds": round(seconds, 1)}
        write_state(state_path, state, threads=args.threads)
    args.out.with_suffix(".md").write_text(render(state))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

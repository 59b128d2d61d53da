"""CLI defaults vs tuned: each method's command as a user types it with no settings, before and after the
defaults became the tuned settings -> bench/results/defaults.md and defaults.json.

    .venv/bin/python bench/bench_defaults.py [--runs runs/defaults] [-n 10000] [--seed 0] [--threads 1]
        [--only METHOD ...] [--out bench/results/defaults]

Every row is a chain of real ``slimgen`` CLI commands (``python -m slimgen ...``, as a user runs
them; a command whose ``--out`` folder is already complete is skipped, so a rerun resumes). The
"old defaults" rows spell out the values the defaults had before (main at c9cbedb) as flags; the
"defaults" rows pass no setting of the method at all. Training rows are shortened the same way
for both (``--epochs 2 --steps-per-epoch 150``; issue 20's table ran ``--epochs 3`` full passes) so the comparison is
paired and affordable on two shared cores. Each final folder is scored with
``slimgen.evaluate.evaluate``: FID in the REPORTING space ``zoo:fmnist-eval`` (no training loss or
selection uses it), n samples of latent seed ``--seed`` against the 10,000 Fashion-MNIST test
images, as a ratio to the teacher's FID on the same latents; PSNR vs the teacher's images on the
same latents; MACs and stored bytes of the generator relative to the teacher's.
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
SHORT = ["--epochs", "2", "--steps-per-epoch", "150"]

# method -> (what chose the new default, {label: [commands]}); "{R}" is the runs folder. Each command's
# --out is the folder that follows it; the last command's --out is the row's model.
ROWS: dict[str, tuple[str, dict[str, list[list[str]]]]] = {
    "prune --method channels": (
        "this table (before any fine-tuning), and every tuned channel row of bench/results/prune.md uses first-order "
        "Taylor importance; `auto` is Taylor where calibration inputs exist (a model folder's generator), else l1",
        {"old defaults (importance l1)": [["prune", TEACHER, "--out", "{R}/ch50-l1", "--method", "channels",
                                             "--ratio", "0.5", "--importance", "l1"]],
         "defaults": [["prune", TEACHER, "--out", "{R}/ch50", "--method", "channels", "--ratio", "0.5"]]}),
    "prune --method magnitude": (
        "this table: ranking |w| over all layers beats removing 90% of every layer (the tuned unstructured rows of "
        "bench/results/prune.md rank globally too)",
        {"old defaults (scope layerwise)": [["prune", TEACHER, "--out", "{R}/mag90-layerwise", "--method",
                                             "magnitude", "--ratio", "0.9", "--scope", "layerwise"]],
         "defaults": [["prune", TEACHER, "--out", "{R}/mag90", "--method", "magnitude", "--ratio", "0.9"]]}),
    "finetune --teacher (after prune channels 0.5)": (
        "bench/results/prune.md `channels 50% + FT`: L1 to the teacher's images weighted 100",
        {"old defaults (teacher_weight 0)": [["finetune", "{R}/ch50", "--out", "{R}/ft-old", "--teacher", TEACHER,
                                              *SHORT, "--teacher-weight", "0"]],
         "defaults": [["finetune", "{R}/ch50", "--out", "{R}/ft", "--teacher", TEACHER, *SHORT]]}),
    "distill --student (prune channels 0.5)": (
        "L1 to the teacher's images weighted 10 against an adversarial term of 0.05 (the teacher's discriminator, "
        "where it has one and real images are given), lr 5e-4 on a cosine: the terms of recipes/default.yaml and of "
        "unstructured90's best round (bench/results/prune.md); this table's paired rows measure it. The feature term "
        "weighted 5 was tried as the default on 2026-12-03 (it is the strongest lever for an 11x student over "
        "thousands of steps, bench/results/distill_terms.md) and not adopted: on this row it scored 1.187x against "
        "1.136x without it, beyond the one-seed noise; the compact and frontier recipes set it",
        {"old defaults (output 1, lr 2e-4 constant)": [["distill", TEACHER, "--student", "{R}/ch50", "--out",
                                                        "{R}/distill-old", *SHORT, "--output", "1", "--feature", "0",
                                                        "--adversarial", "0", "--perceptual", "0", "--lr", "2e-4",
                                                        "--lr-schedule", "constant"]],
         "feature 5 (tried as the default on 2026-12-03, not adopted)": [
             ["distill", TEACHER, "--student", "{R}/ch50", "--out", "{R}/distill-feature5", *SHORT, "--feature", "5"]],
         "defaults": [["distill", TEACHER, "--student", "{R}/ch50", "--out", "{R}/distill-feature0", *SHORT]]}),
    "quantize": (
        "this table, and bench/results/quantize.md's int8 W+A row (percentile observer): int8 activations cost no FID "
        "here; they lower PSNR, but run as a real int8 ONNX Runtime model",
        {"old defaults (weights int8 only)": [["quantize", TEACHER, "--out", "{R}/q-old", "--weights", "int8",
                                               "--activations", "none"]],
         "defaults": [["quantize", TEACHER, "--out", "{R}/q"]]}),
}


def _out_of(command: list[str]) -> Path:
    return Path(command[command.index("--out") + 1])


def run_chain(commands: list[list[str]], runs: Path, threads: int) -> tuple[Path, float]:
    """Run the CLI commands in order (skipping finished ones); the last --out folder and the seconds spent."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    seconds = 0.0
    for template in commands:
        command = [part.replace("{R}", str(runs)) for part in template]
        out = _out_of(command)
        if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
            continue
        print("$ slimgen", " ".join(command), flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "slimgen", *command, "--overwrite"], check=True, env=env)
        seconds += time.perf_counter() - t0
    return out, seconds


def render(state: dict[str, Any]) -> str:
    t = state["teacher_score"]
    lines = [
        "# CLI defaults vs tuned", "",
        generated_by("bench_defaults.py", state) + " FID in the **reporting space** "
        f"`{SPACE}` (no training loss or selection used it), n = {state['n']} samples of latent seed {state['seed']} "
        f"vs the 10,000 Fashion-MNIST test images, as a ratio to the teacher's FID on the same latents "
        f"({t['fid']:.3f}); one seed, so differences under ~3% are noise. Training rows run `{' '.join(SHORT)}` "
        "for both (paired, shortened). \"old defaults\": the defaults before this change, spelled out as flags; "
        "\"defaults\": the command with no setting of the method.", "",
        "| method | command | FID / teacher | PSNR vs teacher (dB) | MACs x | bytes x | time (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method in ROWS:
        if not state["rows"].get(method):
            lines.append(f"| {method} | not measured yet (`bench/bench_defaults.py --only '{method}'`) | - | - | - | - | - |")
        for label, r in state["rows"].get(method, {}).items():
            psnr = "-" if r["psnr"] is None else f"{r['psnr']:.1f}"
            cmd = " && ".join("slimgen " + " ".join(c) for c in r["commands"]).replace("{R}", state.get("runs", "{R}"))
            lines.append(f"| {method} | {label}: `{cmd}` | **{r['fid'] / t['fid']:.3f}** | {psnr} | "
                         f"{t['macs'] / r['macs']:.1f} | {t['weight_bytes'] / r['weight_bytes']:.1f} | {r['seconds']:.0f} |")
    lines += ["", "Why each new default (the bench row that chose it):", ""]
    lines += [f"- `{method}`: {why}" for method, (why, _) in ROWS.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs/defaults"))
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="methods (keys of the table) to run; default all")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "defaults")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state_path = args.out.with_suffix(".json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"rows": {}}
    if state.get("n") not in (None, args.n) or state.get("seed") not in (None, args.seed):
        ap.error(f"{state_path} holds scores for another n or seed; use another --out")
    state.update({"n": args.n, "seed": args.seed, "threads": args.threads, "runs": str(args.runs)})
    if "teacher_score" not in state:
        state["teacher_score"] = score(TEACHER, None, n=args.n, seed=args.seed)
    from slimgen.models import load_folder

    teacher = load_folder(TEACHER)
    for method, (_, rows) in ROWS.items():
        if args.only and method not in args.only:
            continue
        for label, commands in rows.items():
            done = state["rows"].get(method, {}).get(label)
            if done and done["commands"] == commands:
                continue
            folder, seconds = run_chain(commands, args.runs, args.threads)
            row = {**score(folder, teacher, n=args.n, seed=args.seed), "commands": commands, "seconds": round(seconds, 1)}
            state["rows"].setdefault(method, {})[label] = row
            print(method, label, f"FID/teacher {row['fid'] / state['teacher_score']['fid']:.3f}", flush=True)
            write_state(state_path, state)
    args.out.with_suffix(".md").write_text(render(state))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

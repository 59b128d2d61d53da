"""FID of the DCGAN teacher after every training epoch: do more epochs still help?

Reads the per-epoch generator snapshots that `slimgen train dcgan` keeps in
OUT/checkpoint/snapshots/ and scores each with slimgen's FID (classifier features, fixed
latents) against the Fashion-MNIST test set. Resumable: scores are kept in
bench/results/teacher_epochs.json, and an epoch already scored there is not scored again.

    .venv/bin/python bench/teacher_epochs.py [--run /work/runs/dcgan-fmnist] [-n 5000]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from safetensors.torch import load_file

from slimgen.evaluate import fid_score
from slimgen.models import load_folder

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("/work/runs/dcgan-fmnist"))
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--shipped", type=int, default=52, help="the epoch whose generator zoo:dcgan-fmnist ships")
    args = ap.parse_args()
    teacher = load_folder(args.run)
    g = teacher.generator
    cache = RESULTS / "teacher_epochs.json"
    scores: dict[str, float] = json.loads(cache.read_text()) if cache.is_file() else {}
    for snap in sorted((args.run / "checkpoint" / "snapshots").glob("generator-*.safetensors")):
        epoch = str(int(snap.stem.split("-")[1]))
        if epoch in scores:
            continue
        g.load_state_dict(load_file(str(snap)))
        g.eval()
        scores[epoch] = fid_score(g, teacher.latent_dim, n=args.n, seed=0)
        print(epoch, scores[epoch], flush=True)
        cache.write_text(json.dumps(scores, indent=1) + "\n")
    rows = sorted((int(e), f) for e, f in scores.items())
    lines = [
        "# DCGAN teacher: FID after each epoch", "",
        f"Command: `.venv/bin/python bench/teacher_epochs.py --run {args.run} -n {args.n}`; "
        f"FID in zoo:fmnist-classifier feature space, {args.n} samples (latent seed 0) vs the 10,000 "
        f"Fashion-MNIST test images; {torch.get_num_threads()} threads, {platform.machine()}.", "",
        f"The shipped `zoo:dcgan-fmnist` is the epoch-{args.shipped} generator of this run (how the run was "
        "resumed: the zoo card, `slimgen/zoo/dcgan-fmnist/card.md`). Every compression benchmark in this folder "
        "is relative to it.", "",
        "| epoch | FID |", "| ---: | ---: |", *[f"| {e} | {f:.3f} |" for e, f in rows],
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "teacher_epochs.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

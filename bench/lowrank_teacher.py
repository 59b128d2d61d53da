"""The teacher with its latent layer factorized at rank r and NO training, scored in three feature spaces ->
bench/results/lowrank_teacher.md / .json.

    .venv/bin/python bench/lowrank_teacher.py [--ranks 8 16 24 32 48] [--threads 2] [-n 10000]

Why: a distilled student with a low-rank latent layer (``prune_lowrank``) scores better than one without
(bench/results/kernel.md); this separates what the rank does by itself. Each row is
``slimgen prune zoo:dcgan-fmnist --method lowrank --rank R --layer net.0`` (truncated SVD, nothing trained)
scored by ``slimgen.evaluate.evaluate`` on n samples of latent seed 0 against the 10,000 Fashion-MNIST test
images in: the REPORTING space ``zoo:fmnist-eval``, the training space ``zoo:fmnist-classifier`` (the
classifier the selection steps use) and ``random`` features (an untrained network: pixel statistics, where
lost diversity shows). Ratios are to the teacher's FID in the same space. Resumable: a finished score is
kept in the .json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from bench_frontier import generated_by, write_state  # bench/ is on sys.path when a bench script runs

from slimgen.evaluate import evaluate
from slimgen.models import load_folder
from slimgen.prune import LowRankFactorization, prune

ROOT = Path(__file__).resolve().parent
TEACHER = "zoo:dcgan-fmnist"
SPACES = {"reporting": "zoo:fmnist-eval", "training": "zoo:fmnist-classifier", "random": "random"}


def _score(bundle: Any, extractor: str, n: int) -> dict[str, float]:
    r = evaluate(bundle, reference="fashion-mnist", extractor=extractor, n=n, seed=0, latency=False, write=False,
                 training_space=False)
    return {"fid": r.fid, "precision": r.precision, "recall": r.recall}


def render(state: dict[str, Any]) -> str:
    rows = state["rows"]
    teacher = rows["teacher"]
    lines = ["# The teacher's latent layer at low rank, untrained, in three feature spaces", "",
             f"{generated_by('lowrank_teacher.py', state)} `{TEACHER}`'s latent layer `net.0` (64 latent channels -> "
             "128 x 7 x 7) factorized by `slimgen prune --method lowrank --rank R --layer net.0` (truncated SVD), "
             f"nothing trained; n = {state['n']:,} samples of latent seed 0 vs the 10,000 Fashion-MNIST test images. "
             "FID x: the FID over the teacher's in the same space. Spaces: reporting `zoo:fmnist-eval` (what every "
             "published ratio uses), training `zoo:fmnist-classifier` (what best-epoch selection uses), `random` "
             "(an untrained network's features).", "",
             "| latent layer | energy kept | FID x reporting | recall reporting | FID x training | FID x random "
             "| recall random |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r.get('energy', 1.0):.3f} | "
                     f"**{r['reporting']['fid'] / teacher['reporting']['fid']:.3f}** | {r['reporting']['recall']:.3f} | "
                     f"{r['training']['fid'] / teacher['training']['fid']:.3f} | "
                     f"{r['random']['fid'] / teacher['random']['fid']:.3f} | {r['random']['recall']:.3f} |")
    lines += ["", "Teacher FIDs: " + ", ".join(f"{s} {teacher[s]['fid']:.3f}" for s in SPACES) + "."]
    for note in state.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 24, 32, 48])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--note", nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "lowrank_teacher")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state_path = args.out.with_suffix(".json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"rows": {}}
    state["n"] = args.n
    teacher = load_folder(TEACHER)
    models = {"teacher": (teacher, 1.0)}
    for rank in args.ranks:
        low = prune(teacher, LowRankFactorization(rank=rank, layers=("net.0",)))
        models[f"rank {rank}"] = (low, low.steps[-1]["factorized_layers"]["net.0"]["energy"])
    for label, (bundle, energy) in models.items():
        row = state["rows"].setdefault(label, {"energy": energy})
        for space, extractor in SPACES.items():
            if space not in row:
                row[space] = _score(bundle, extractor, args.n)
                write_state(state_path, state, threads=args.threads)
    if args.note:
        state["notes"] = args.note
    write_state(state_path, state, threads=args.threads)
    page = render(state)
    args.out.with_suffix(".md").write_text(page)
    print(page)


if __name__ == "__main__":
    main()

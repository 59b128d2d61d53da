"""The compression frontier: run recipes through the pipeline runner, score each final model over latent seeds
in the REPORTING space -> bench/results/frontier.md and frontier.json.

    .venv/bin/python bench/bench_frontier.py LABEL=RECIPE[@RUN_FOLDER] [...] [--seeds 0 1 2 3 4] [-n 10000]
        [--threads 1] [--runs runs/frontier] [--reuse FID_TWO_SPACES_JSON ...] [--out bench/results/frontier]

Each row: ``slimgen compress`` of RECIPE (``slimgen.pipeline.compress``) into RUN_FOLDER (default
``--runs/LABEL``); a rerun resumes after the last finished step, and a finished run (its ``final``
folder written) is only read, whatever recipe text it holds (an older copy of the same steps).
Its ``final`` folder (the int8 graph where the recipe quantized activations, as
:func:`slimgen.runtime.default_choice` picks) and the teacher are scored with
``slimgen.evaluate.evaluate`` on n samples of each latent seed against the 10,000 Fashion-MNIST test
images in ``zoo:fmnist-eval``'s features, a classifier no training loss or selection uses.
``fid_ratio``: FID / the teacher's FID on the same seed, mean over seeds; precision and recall
(reporting space) and PSNR vs the teacher (dB, images in [-1, 1]) are means over the seeds too.
MACs x and bytes x: the teacher's MACs per image and stored weight bytes over the final step's
(the runner's summary.json). ``wall_s``: the recipe's step times (pruning, training,
quantization, export), evaluation excluded, as the runner recorded them.

``--reuse``: scores already taken the same way (``bench/fid_two_spaces.py``'s .json, or this
script's own from another invocation, e.g. one seed per process: the same ``evaluate`` call, n
and seeds, in the same reporting space) are read instead of recomputed when they name the same
model folder; the table says which rows they are. Resumable: every finished
score is written to the .json at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from slimgen.evaluate import evaluate
from slimgen.models import load_folder
from slimgen.pipeline import Recipe, compress, load_recipe

ROOT = Path(__file__).resolve().parent
SPACE = "zoo:fmnist-eval"


def parse_rows(ap: argparse.ArgumentParser, specs: list[str], runs: Path) -> dict[str, tuple[str, Path]]:
    """LABEL=RECIPE[@RUN_FOLDER] -> {label: (recipe path, run folder)}; argparse errors for a malformed one."""
    rows = {}
    for spec in specs:
        if "=" not in spec:
            ap.error(f"expected LABEL=RECIPE[@RUN_FOLDER], got {spec!r}")
        label, rest = spec.split("=", 1)
        recipe, _, folder = rest.partition("@")
        if not Path(recipe).is_file():
            ap.error(f"{label}: no recipe file {recipe}")
        rows[label] = (recipe, Path(folder) if folder else runs / label)
    return rows


def with_step_n(recipe: Recipe, n: int | None) -> Recipe:
    """``recipe`` with its per-step evaluation on ``n`` samples and no latency timing (its source text, which
    a resumed run checks, unchanged); ``n`` None: as written."""
    if n is None:
        return recipe
    return dataclasses.replace(recipe, evaluate=dataclasses.replace(recipe.evaluate, n=n, latency=False))


def reused_scores(paths: list[Path]) -> dict[tuple[str, int], dict[str, float]]:
    """(resolved model folder or zoo name, seed) -> {fid, precision, recall[, psnr]} from fid_two_spaces.py state
    files or this script's own (the same reporting-space evaluate call)."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    for path in paths:
        state = json.loads(path.read_text())
        if state.get("n") is None:
            continue
        for key, s in state.get("scores", {}).items():
            model = s.get("model", "")
            if "feature_space" in state:  # this script's own .json (e.g. seeds scored by parallel invocations)
                if state["feature_space"] == SPACE:
                    out[(f"{model}|{state['n']}", int(key.rsplit("/", 1)[1]))] = {
                        **{k: s[k] for k in ("fid", "precision", "recall", "psnr", "runtime") if k in s},
                        "reused": s.get("reused")}  # this script's own measurement is not marked
                continue
            if model.startswith("onnx:"):
                continue
            seed = int(key.rsplit("/", 1)[1])
            where = model if model.startswith("zoo:") else str(Path(model).resolve())
            out[(f"{where}|{state['n']}", seed)] = {"fid": s["report"], "precision": s["report_precision"],
                                                     "recall": s["report_recall"], "reused": str(path.name)}
    return out


def score(model: str | Path, teacher: Any, *, n: int, seed: int) -> dict[str, Any]:
    """Reporting-space FID, precision, recall and PSNR vs ``teacher`` (None for the teacher itself)."""
    r = evaluate(str(model), teacher=teacher, reference="fashion-mnist", extractor=SPACE, n=n, seed=seed,
                 latency=False, write=False, training_space=False)
    return {"fid": r.fid, "precision": r.precision, "recall": r.recall, "psnr": r.psnr, "runtime": r.runtime,
            "macs": r.macs, "weight_bytes": r.weight_bytes}


def write_state(state_path: Path, state: dict[str, Any], **settings: Any) -> None:
    """Stamp ``state`` with the machine, load average, date and ``settings``; write it as JSON atomically."""
    from slimgen.io import atomic_path
    from slimgen.runtime.hardware import cpu_peak

    cpu = cpu_peak()  # the CPU and the units its bf16 and int8 run on: results differ across machine classes
    units = f"bf16 on {cpu.isa['bf16']}, int8 on {cpu.isa['int8']}"
    state.update({"machine": f"{platform.machine()}, {cpu.model} ({units}), {os.cpu_count()} CPU cores, "
                             f"torch {torch.__version__}",
                  "load": round(os.getloadavg()[0], 2), "date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
                  **settings})
    with atomic_path(state_path) as tmp:
        tmp.write_text(json.dumps(state, indent=2) + "\n")


def sweep_cli(doc: str | None, name: str, labels: list[str]) -> tuple[argparse.Namespace, Path, dict[str, Any]]:
    """The command line of a one-row-per-label sweep (``--only``, ``--runs runs/NAME``, ``--threads``,
    ``--render``, ``--note``, ``--out results/NAME``): the parsed arguments, the state file and its state."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, choices=labels)
    ap.add_argument("--runs", type=Path, default=Path("runs") / name)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--note", nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / name)
    args = ap.parse_args()
    state_path = args.out.with_suffix(".json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"rows": {}}
    if args.note:  # before any page is rendered from the state
        state["notes"] = args.note
    args.runs.mkdir(parents=True, exist_ok=True)
    return args, state_path, state


def finish_sweep(args: argparse.Namespace, state_path: Path, state: dict[str, Any], page: str) -> None:
    """The state (with the ``--note`` texts :func:`sweep_cli` put in it) and the rendered ``page`` written; the
    page printed."""
    write_state(state_path, state, threads=args.threads)
    args.out.with_suffix(".md").write_text(page)
    print(page)


def generated_by(script: str, state: dict[str, Any]) -> str:
    """The first sentence of a results page: script, date, machine, threads and load."""
    return (f"Generated by `bench/{script}`, {state['date']}, {state['machine']}, {state['threads']} thread(s), "
            f"1-minute load average {state['load']} (2 CPU cores shared with other jobs).")


def _mean(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.mean(real) if real else None


def row_of(label: str, recipe: str, folder: Path, seeds: list[int], scores: dict[str, Any]) -> dict[str, Any]:
    """One ``rows`` entry of frontier.json from the run's summary.json and the seed scores."""
    summary = json.loads((folder / "summary.json").read_text())
    first, last = summary[0], summary[-1]
    mine = [scores[f"{label}/{s}"] for s in seeds]
    ratios = [m["fid"] / scores[f"teacher/{s}"]["fid"] for m, s in zip(mine, seeds, strict=True)]
    return {"recipe": recipe, "label": label, "run": str(folder),
            "macs_x": first["macs"] / last["macs"], "bytes_x": first["weight_bytes"] / last["weight_bytes"],
            "macs": last["macs"], "weight_bytes": last["weight_bytes"],
            "fid_ratio": statistics.mean(ratios), "fid_ratio_seeds": ratios,
            "fid_seeds": [m["fid"] for m in mine],
            "precision": _mean([m["precision"] for m in mine]), "recall": _mean([m["recall"] for m in mine]),
            "psnr_db": _mean([m.get("psnr") for m in mine]) if any(m.get("psnr") for m in mine) else last.get("psnr"),
            "wall_s": round(sum(r.get("step_seconds") or 0 for r in summary[1:]), 1),
            "reused": sorted({m["reused"] for m in mine if m.get("reused")})}


def render(state: dict[str, Any]) -> str:
    seeds = state["seeds"]
    lines = [
        "# Compression frontier (DCGAN, Fashion-MNIST)", "",
        generated_by("bench_frontier.py", state) + f" Teacher `{state['teacher']}`. "
        f"**Reporting space** `{state['feature_space']}` (no training loss or selection used it): each FID is "
        f"n = {state['n']} samples of one latent seed against the 10,000 Fashion-MNIST test images; FID / teacher "
        f"is the ratio to the teacher's FID on the same seed, mean (min-max) over seeds {seeds}. Precision, recall "
        "(reporting space) and PSNR vs the teacher's images on the same latents: means over the seeds. MACs x, bytes x: "
        "the teacher's MACs per image and stored weight bytes over the final model's. Step time: the recipe's steps "
        "(pruning, training, quantization, export), evaluation excluded.", "",
        "| recipe | label | MACs x | bytes x | FID / teacher (min-max) | precision | recall | PSNR dB | step time (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in state["rows"]:
        q = r["fid_ratio_seeds"]
        psnr = f"{r['psnr_db']:.1f}" if r["psnr_db"] is not None else "-"
        lines.append(f"| `{r['recipe']}` | {r['label']} | {r['macs_x']:.1f} | {r['bytes_x']:.1f} | "
                     f"**{r['fid_ratio']:.3f}** ({min(q):.3f}-{max(q):.3f}) | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{psnr} | {r['wall_s']:.0f} |")
    t = [state["scores"][f"teacher/{s}"]["fid"] for s in seeds]
    lines += ["", f"Teacher FID per seed (reporting space): {', '.join(f'{f:.3f}' for f in t)}."]
    reused = [f"{r['label']} ({', '.join(r['reused'])})" for r in state["rows"] if r["reused"]]
    if reused:
        lines += ["", "Scores read from earlier runs of `bench/fid_two_spaces.py` (the same evaluate call, n and seeds "
                  "in the same reporting space; those files hold no PSNR, so it is the run's own summary's, seed 0): "
                  + "; ".join(reused) + "."]
    rows = {r["label"]: r for r in state["rows"]}
    checks = [(label, t, rows[label]) for label, t in state.get("targets", {}).items() if label in rows]
    if checks:
        lines += ["", "Targets (issue 20):", ""]
    for label, (macs, size, fid), r in checks:
        parts = [f"MACs x {r['macs_x']:.1f} (>= {macs:g}: {'met' if r['macs_x'] >= macs else 'missed'})",
                 f"bytes x {r['bytes_x']:.1f} (>= {size:g}: {'met' if r['bytes_x'] >= size else 'missed'})",
                 f"FID / teacher {r['fid_ratio']:.3f} (<= {fid:g}: " + ("met" if r["fid_ratio"] <= fid else
                                                                      f"missed by {r['fid_ratio'] - fid:.3f}") + ")"]
        lines.append(f"- {label}: " + "; ".join(parts) + ".")
    lines += [f"\n{label}: {text}" for label, text in state.get("notes", {}).items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", help="LABEL=RECIPE[@RUN_FOLDER]")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=Path, default=Path("runs/frontier"), help="run folders of rows without @RUN_FOLDER")
    ap.add_argument("--reuse", type=Path, nargs="*", default=[], help="fid_two_spaces.py .json files to read scores from")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "frontier", help="writes OUT.md and OUT.json")
    ap.add_argument("--step-n", type=int, default=None,
                    help="samples of the runner's per-step evaluation (default: the recipe's evaluate n); the rows' "
                    "scores are always n per seed")
    ap.add_argument("--target", nargs="*", default=[], metavar="LABEL=MACS_X,BYTES_X,FID_RATIO",
                    help="targets to check a row against (at least MACS_X and BYTES_X, at most FID_RATIO)")
    ap.add_argument("--note", nargs="*", default=[], metavar="LABEL=TEXT", help="a note printed under the table")
    ap.add_argument("--run-only", action="store_true", help="run the recipes and stop (score in a later invocation)")
    args = ap.parse_args()
    rows = parse_rows(ap, args.rows, args.runs)
    torch.set_num_threads(args.threads)
    state_path = args.out.with_suffix(".json")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state.get("n") not in (None, args.n):
        ap.error(f"{state_path} holds scores for n = {state['n']}; use another --out")
    scores: dict[str, Any] = state.get("scores", {})
    reuse = reused_scores(args.reuse)
    teachers = {load_recipe(recipe).teacher for recipe, _ in rows.values()}
    if len(teachers) != 1:
        ap.error(f"all recipes must share one teacher to share its scores; got {sorted(teachers)}")
    teacher_name = teachers.pop()
    teacher = load_folder(teacher_name)

    def save() -> None:
        write_state(state_path, state, threads=args.threads, feature_space=SPACE, n=args.n, seeds=args.seeds,
                    teacher=teacher_name, scores=scores)

    def take(key: str, model: str | Path, seed: int, against: Any) -> None:
        where = model if str(model).startswith("zoo:") else str(Path(model).resolve())
        if key in scores and scores[key].get("model") == str(where):
            return
        found = reuse.get((f"{where}|{args.n}", seed))
        t0 = time.perf_counter()
        scores[key] = {**(found or score(model, against, n=args.n, seed=seed)), "model": str(where)}
        print(key, {k: v for k, v in scores[key].items() if k != "model"}, f"{time.perf_counter() - t0:.0f} s", flush=True)
        save()

    state.setdefault("rows", [])  # rows of earlier invocations stay; a label run again is replaced
    for label, (recipe, folder) in rows.items():
        print(f"{label}: {recipe} in {folder}", flush=True)
        if not ((folder / "final").is_dir() and (folder / "summary.json").is_file()):  # a finished run is only read
            compress(with_step_n(load_recipe(recipe), args.step_n), out=folder)
        if args.run_only:
            continue
        for seed in args.seeds:
            take(f"teacher/{seed}", teacher_name, seed, None)
            take(f"{label}/{seed}", folder / "final", seed, teacher)
        state["rows"] = [r for r in state["rows"] if r["label"] != label]
        state["rows"].append(row_of(label, recipe, folder, args.seeds, scores))
        save()
    if args.run_only:
        return
    state["targets"] = {**state.get("targets", {}), **{t.split("=", 1)[0]: [float(v) for v in t.split("=", 1)[1].split(",")]
                                                       for t in args.target}}
    state["notes"] = {**state.get("notes", {}), **dict(n.split("=", 1) for n in args.note)}
    save()
    args.out.with_suffix(".md").write_text(render(state))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()

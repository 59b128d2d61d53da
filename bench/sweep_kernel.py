"""Students of zoo:dcgan-fmnist at ~10x (and ~20x) fewer MACs: channel pruning alone vs cropped kernels, grouped and
depthwise-separable layers, and what sub-8-bit weights cost the best of them -> bench/results/kernel.md / .json.

    .venv/bin/python bench/sweep_kernel.py [--only LABEL ...] [--runs runs/kernel] [--threads 1] [--render]

Each row builds a student, then ``slimgen distill zoo:dcgan-fmnist --student S`` with the row's flags, then
``slimgen evaluate`` on n = 10,000 samples of latent seed 0 in the REPORTING space ``zoo:fmnist-eval`` (no
training loss or selection uses it) against the 10,000 Fashion-MNIST test images; FID / teacher is the
ratio to the teacher's 2.345 on the same latents. Students: ``slimgen prune`` (channels, then
``--method kernel`` where the row says so) for the rows marked "slimgen"; the classes of bench/arch_students.py (imported as a
user's architecture) for the others. One training run per row: differences under ~0.05 are noise.
The "quantized" section quantizes one row's final model (``QROW``) each way and scores it the same way.
A step whose output exists is skipped, so a rerun resumes; ``--render`` only writes the table.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from bench_frontier import finish_sweep, generated_by, sweep_cli, write_state  # bench/ is on sys.path when a bench script runs

ROOT = Path(__file__).resolve().parent
SLIMGEN = [sys.executable, "-m", "slimgen"]
TEACHER, TEACHER_FID = "zoo:dcgan-fmnist", 2.345  # the teacher's reporting-space FID at seed 0 (frontier.md)
TEACHER_BYTES = 2_135_556
BASE = ["--output", "10", "--lr-schedule", "cosine", "--lr", "5e-4", "--feature", "1", "--adversarial", "0.05"]
E3K = ["--epochs", "10", "--steps-per-epoch", "300", *BASE]
E12K = ["--epochs", "12", "--steps-per-epoch", "1000", *BASE, "--precision", "bf16", "--eval-n", "1000"]

# label -> (student, widths, build, distill flags); build: ("slimgen", channel prune flags) or (class, kwargs)
ROWS: dict[str, tuple[str, tuple[Any, ...], list[str]]] = {
    "3k: [64, 28] depthwise 4x4 + 1x1 (random init)": ("[64, 28]", ("SepG", {"c1": 64, "c2": 28}), E3K),
    "3k: [48, 24] middle layer in 2 groups": ("[48, 24]", ("GroupG", {"c1": 48, "c2": 24, "groups": 2}), E3K),
    "3k: [46, 23] middle kernel 3x3": ("[46, 23]", ("KernG", {"c1": 46, "c2": 23, "k": 3}), E3K),
    "3k: [64, 32] middle kernel 2x2": ("[64, 32]", ("KernG", {"c1": 64, "c2": 32, "k": 2}), E3K),
    "3k: [58, 30] 2x2 + depthwise 3x3 before and after": ("[58, 30]", ("KernDW", {"c1": 58, "c2": 30}), E3K),
    "3k: [62, 31] 2x2 + depthwise 3x3 before": ("[62, 31]", ("KernDW", {"c1": 62, "c2": 31, "post": False}), E3K),
    "3k: [60, 30] 2x2 + depthwise 3x3 after": ("[60, 30]", ("KernDW", {"c1": 60, "c2": 30, "pre": False}), E3K),
    "3k: [64, 32] 2x2, latent layer at rank 32": ("[64, 32]", ("KernDW", {"c1": 64, "c2": 32, "pre": False,
                                                                         "post": False, "rank": 32}), E3K),
    "3k: [64, 32] 2x2, latent layer at rank 16": ("[64, 32]", ("KernDW", {"c1": 64, "c2": 32, "pre": False,
                                                                         "post": False, "rank": 16}), E3K),
    "3k: [64, 32] 2x2, latent layer at rank 32, seed 1": ("[64, 32]", ("KernDW", {"c1": 64, "c2": 32, "pre": False,
                                                                                "post": False, "rank": 32}),
                                                           [*E3K, "--seed", "1"]),
    "12k bf16: [64, 32] middle kernel 2x2": ("[64, 32]", ("KernG", {"c1": 64, "c2": 32, "k": 2}), E12K),
    "12k bf16: [64, 32] middle kernel 2x2, seed 1": ("[64, 32]", ("KernG", {"c1": 64, "c2": 32, "k": 2}),
                                                     [*E12K, "--seed", "1"]),
    "12k bf16: [64, 32] 2x2, slimgen (Taylor channels + prune --method kernel)": (
        "[64, 32]", ("slimgen", ["--ratio", "0.5", "--importance", "taylor"]), E12K),
    "20x MACs, 12k bf16: [24, 12] 4x4, slimgen (Taylor channels only: recipes/frontier.yaml's student)": (
        "[24, 12]", ("channels", ["--ratio", "0.8125", "--importance", "taylor"]), E12K),
    "20x MACs, 12k bf16: [48, 16] 2x2, slimgen (Taylor channels + prune --method kernel)": (
        "[48, 16]", ("slimgen", ["--ratio", "0.75", "--layer-ratio", "net.0=0.625", "--importance", "taylor"]), E12K),
}
QROW = "12k bf16: [64, 32] middle kernel 2x2, seed 1"
REFERENCE = ("Channel pruning alone at 11.2x, [35, 17], 4x4 kernels (bench/results/distill_terms.md, same flags): "
             "3,000 steps 1.440x; 12,000 fp32 steps 1.285x and 1.316x (recipes/compact.yaml, two runs); "
             "20,000 bf16 steps 1.219x and 1.362x.")


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("a") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env)


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)[:60]


def build_and_train(label: str, runs: Path, threads: int) -> Path:
    _, build, flags = ROWS[label]
    folder, student, log = runs / _slug(label), runs / f"{_slug(label)}.student", runs / f"{_slug(label)}.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    trust: list[str] = []
    if build[0] in ("slimgen", "channels"):  # slimgen's own pruning: channels, then (slimgen) kernels
        channels = runs / f"{_slug(label)}.channels" if build[0] == "slimgen" else student
        if not (channels / "config.json").is_file():
            _run([*SLIMGEN, "prune", TEACHER, "--method", "channels", *build[1], "--out", str(channels)], log)
        if not (student / "config.json").is_file():
            _run([*SLIMGEN, "prune", str(channels), "--method", "kernel", "--out", str(student)], log)
    else:
        kind, kwargs = build
        trust = ["--trust-code", f"arch_students:{kind}"]
        if not (student / "config.json").is_file():
            weights = runs / f"{_slug(label)}.safetensors"
            _run([sys.executable, str(ROOT / "arch_students.py"), kind, json.dumps(kwargs), str(weights)], log, env)
            _run([*SLIMGEN, "import", str(weights), "--arch", f"arch_students:{kind}", "--kwargs", json.dumps(kwargs),
                  "--latent-shape", "64", "--out", str(student)], log, env)
    if not (folder / "config.json").is_file():
        _run([*SLIMGEN, *trust, "distill", TEACHER, "--student", str(student), "--out", str(folder),
              "--threads", str(threads), *flags], log, env)
    return folder


def evaluate(folder: Path, threads: int, trust: list[str]) -> dict[str, Any]:
    out = folder.parent / f"{folder.name}.eval.json"
    if not out.is_file():
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        res = subprocess.run([*SLIMGEN, *trust, "evaluate", str(folder), "-n", "10000", "--seed", "0", "--no-latency",
                              "--json", "--no-write"], check=True, capture_output=True, text=True, env=env)
        out.write_text(res.stdout)
    d = json.loads(out.read_text())
    return {"fid_ratio": d["fid"] / TEACHER_FID, "precision": d["precision"], "recall": d["recall"],
            "macs": d["macs"], "params": d["params"], "weight_bytes": d["weight_bytes"]}


def quantized(folder: Path, runs: Path, threads: int) -> dict[str, dict[str, Any]]:
    """The row's model quantized each way (and per layer, weights fake-quantized in float), scored."""
    from slimgen import api
    from slimgen.data import load_dataset
    from slimgen.quantize import ActivationQuant, KMeansQuant, LinearQuant, QuantAwareTraining, Quantization

    sys.path.insert(0, str(ROOT))
    api.trust_code("arch_students:KernG")
    torch.set_num_threads(threads)
    bundle = api.load_folder(folder)
    act = ActivationQuant(bits=8, calibration=512, observer="percentile", entropy_coding="lzma")
    int4 = LinearQuant(bits=4, per_channel=True, entropy_coding="lzma", output_layer_bits=8)
    ways: dict[str, Any] = {
        "int8 weights + activations (lzma)": Quantization(weights=LinearQuant(bits=8, entropy_coding="lzma"),
                                                          activations=act),
        "int4 weights (int8 image layer, lzma)": Quantization(weights=int4),
        "k-means 4-bit weights (lzma)": Quantization(weights=KMeansQuant(bits=4, entropy_coding="lzma")),
        "k-means 5-bit weights (lzma)": Quantization(weights=KMeansQuant(bits=5, entropy_coding="lzma")),
        "QAT int4 weights, 3 x 500 steps (teacher weight 100)": QuantAwareTraining(
            weights=int4, epochs=3, lr=1e-4, teacher_weight=100.0, steps_per_epoch=500),
    }
    rows = {}
    for name, config in ways.items():
        out = runs / f"q_{_slug(name)}"
        if not (out / "config.json").is_file():
            extra = {"data": load_dataset("fashion-mnist", "train")} if isinstance(config, QuantAwareTraining) else {}
            api.save_folder(api.quantize(bundle, config, **extra), out)
        rows[name] = evaluate(out, threads, ["--trust-code", "arch_students:KernG"])
    g0 = bundle.parts["generator"]
    for layer, bits in (("net.0", 4), ("net.0", 5), ("net.0", 6), ("net.3", 4), ("net.6", 4)):
        g = copy.deepcopy(g0)
        w = g.get_submodule(layer).weight  # ConvTranspose (in, out, kh, kw): one scale per output channel
        with torch.no_grad():
            top = w.abs().amax(dim=(0, 2, 3), keepdim=True).clamp_min(1e-12) / (2 ** (bits - 1) - 1)
            w.copy_((w / top).round().clamp(-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) * top)
        bundle.parts["generator"] = g
        r = api.evaluate(bundle, n=10000, seed=0, latency=False, write=False)
        rows[f"only {layer}'s weights at {bits} bits (fake-quantized, float run)"] = {
            "fid_ratio": r.fid / TEACHER_FID, "precision": r.precision, "recall": r.recall}
    bundle.parts["generator"] = g0
    return rows


def render(state: dict[str, Any]) -> str:
    lines = ["# Students at 10x and 20x fewer MACs: cropped kernels vs channels alone", "",
             f"{generated_by('sweep_kernel.py', state)} Teacher {TEACHER}: 7,024,640 MACs, {TEACHER_BYTES:,} stored bytes. "
             "**Reporting space** `zoo:fmnist-eval`, n = 10,000 samples of latent seed 0 vs the 10,000 test images; "
             "FID / teacher = FID / 2.345. One training run per row (two rows at a time, one thread each).", "",
             "| row | widths | MACs x | params | FID / teacher | precision | recall |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in state["rows"].items():
        lines.append(f"| {label} | {ROWS[label][0]} | {7_024_640 / r['macs']:.1f} | {r['params']:,} | "
                     f"**{r['fid_ratio']:.3f}** | {r['precision']:.3f} | {r['recall']:.3f} |")
    lines += ["", REFERENCE, "", f"## Quantized: `{QROW}`", "",
              "| how | stored bytes | bytes x | FID / teacher |", "| --- | ---: | ---: | ---: |"]
    for name, r in state.get("quantized", {}).items():
        stored = f"{r['weight_bytes']:,} | {TEACHER_BYTES / r['weight_bytes']:.1f}" if "weight_bytes" in r else "- | -"
        lines.append(f"| {name} | {stored} | **{r['fid_ratio']:.3f}** |")
    for note in state.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main() -> None:
    args, state_path, state = sweep_cli(__doc__, "kernel", list(ROWS))
    if not args.render:
        for label in args.only or list(ROWS):
            folder = build_and_train(label, args.runs, args.threads)
            kind = ROWS[label][1][0]
            state["rows"][label] = evaluate(folder, args.threads, [] if kind in ("slimgen", "channels") else
                                            ["--trust-code", f"arch_students:{kind}"])
            write_state(state_path, state, threads=args.threads)
        if args.only is None or QROW in args.only:
            state["quantized"] = quantized(args.runs / _slug(QROW), args.runs, args.threads)
    state["rows"] = {k: state["rows"][k] for k in ROWS if k in state["rows"]}
    finish_sweep(args, state_path, state, render(state))


if __name__ == "__main__":
    main()

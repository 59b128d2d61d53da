"""Where the stored bytes of recipes/kernel.yaml's student go, and what fewer bits on its latent layer cost:
float distillation then post-training mixed precision, against quantization-aware distillation
(``distill: {fake_quant: ...}``) -> bench/results/qdistill.md / .json.

    .venv/bin/python bench/sweep_qdistill.py [--only LABEL ...] [--runs runs/qdistill] [--threads 1] [--render]

The student is recipes/kernel.yaml's ([64, 32] by Taylor channel pruning, the 4x4 stride-2 layer cropped to
2x2: 10.0x fewer MACs); its 64-channel latent layer ``net.0`` holds 200,704 of its 209,601 weights, so
its bit width sets the stored size. Each run is ``slimgen compress`` of the recipe text below (distillation
12,000 bf16 steps, the kernel recipe's losses), then ``slimgen quantize`` of the distilled step's folder
with linear per-channel weights, ``--layer-bits net.0=B`` (min-max scales unless the row says MSE) and
lzma-coded codes (weights only: int8
activations need int8 weights everywhere). The last run is the 20x-MAC student of bench/results/kernel.md
([48, 16], middle kernel 2x2), its latent layer fake-quantized to 3 bits for the last 3,000 steps.
Every model is scored by ``slimgen evaluate`` on n = 10,000
samples of latent seed 0 in the REPORTING space ``zoo:fmnist-eval`` (no training loss or selection uses
it) against the 10,000 test images; FID / teacher = FID / 2.345. One training run per recipe: differences
under ~0.05 are noise. A finished step is skipped, so a rerun resumes; ``--render`` only writes the table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench_frontier import finish_sweep, generated_by, sweep_cli, write_state  # bench/ is on sys.path when a bench
from sweep_kernel import SLIMGEN, TEACHER, TEACHER_BYTES, _run, _slug, evaluate  # script runs

TEACHER_MACS = 7_024_640
DISTILL = ("epochs: 12, steps_per_epoch: 1000, lr: 0.0005, lr_schedule: cosine, precision: bf16, select: {n: 1000}, "
           "losses: {output: 10.0, feature: 1.0, adversarial: 0.05}")


def _recipe(fake_quant: str | None, bits: int) -> str:
    fq = f", fake_quant: {{{fake_quant}}}" if fake_quant else ""
    layer = f", layer_bits: {{net.0: {bits}}}" if bits != 8 else ""
    return (f"teacher: {TEACHER}\nsteps:\n  - prune_channels: {{ratio: 0.5, importance: taylor}}\n"
            f"  - prune_kernel: {{size: 2}}\n  - distill: {{{DISTILL}{fq}}}\n"
            f"  - quantize: {{weights: {{method: linear, bits: 8, per_channel: true, entropy_coding: lzma{layer}}}}}\n"
            "evaluate: {n: 2000, latency: false}\n")


E3_TEXT = (f"teacher: {TEACHER}\nsteps:\n"
           "  - prune_channels: {ratio: 0.75, importance: taylor, layer_ratios: {net.0: 0.625}}\n"
           "  - prune_kernel: {size: 2}\n"
           "  - distill: {epochs: 9, steps_per_epoch: 1000, lr: 0.0005, lr_schedule: cosine, precision: bf16, "
           "select: {n: 1000}, losses: {output: 10.0, feature: 1.0, adversarial: 0.05}}\n"
           "  - distill: {epochs: 3, steps_per_epoch: 1000, lr: 0.0002, lr_schedule: cosine, precision: bf16, "
           "select: {n: 1000}, losses: {output: 10.0, feature: 1.0, adversarial: 0.05}, "
           "fake_quant: {bits: 8, per_channel: true, layer_bits: {net.0: 3}}}\n"
           "  - quantize: {weights: {method: linear, bits: 8, per_channel: true, entropy_coding: lzma, "
           "layer_bits: {net.0: 3}}}\n"
           "  - export: {formats: [onnx], dequantize: true}\n"
           "evaluate: {n: 2000, latency: false}\n")

# label -> (recipe text, post-training variants of its last distilled step: (net.0 bits, scale method))
RUNS: dict[str, tuple[str, list[tuple[int, str]]]] = {
    "float distillation": (_recipe(None, 8), [(8, "minmax"), (6, "minmax"), (5, "minmax"), (4, "minmax"),
                                              (5, "mse"), (4, "mse")]),
    "distillation with net.0 fake-quantized to 4 bits": (
        _recipe("bits: 8, per_channel: true, layer_bits: {net.0: 4}", 4), [(4, "minmax")]),
    "20x MACs: [48, 16] 2x2, 9k float steps + 3k with net.0 fake-quantized to 3 bits": (E3_TEXT, [(3, "minmax")]),
}


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def run_one(label: str, runs: Path, threads: int) -> dict[str, dict[str, Any]]:
    recipe_text, variants = RUNS[label]
    slug = _slug(label)
    recipe, run, log = runs / f"{slug}.yaml", runs / slug, runs / f"{slug}.log"
    recipe.write_text(recipe_text)
    if not (run / "final").exists():
        _run([*SLIMGEN, "compress", "--recipe", str(recipe), "--out", str(run)], log, _env(threads))
    distilled = [p for p in sorted(run.iterdir()) if p.name.endswith("-distill")][-1]
    rows = {}
    for bits, scale in variants:
        suffix = "" if scale == "minmax" else f"_{scale}"
        q = runs / f"{slug}.net0_{bits}bit{suffix}"
        if not (q / "config.json").is_file():
            layer = ["--layer-bits", f"net.0={bits}"] if bits != 8 else []
            _run([*SLIMGEN, "quantize", str(distilled), "--weights", "int8", *layer, "--scale", scale, "--entropy", "lzma",
                  "--activations", "none", "--threads", str(threads), "--out", str(q), "--overwrite"], log, _env(threads))
        how = "" if scale == "minmax" else f" ({scale.upper()} scales)"
        rows[f"{label}; net.0 {bits}-bit, the rest 8-bit{how}"] = evaluate(q, threads, [])
    rows[f"{label}; its last distill step's weights, unquantized"] = evaluate(distilled, threads, [])
    return rows


def render(state: dict[str, Any]) -> str:
    lines = ["# The latent layer at fewer bits: post-training vs quantization-aware distillation",
             "", f"{generated_by('sweep_qdistill.py', state)} Teacher {TEACHER}: {TEACHER_MACS:,} MACs, "
             f"{TEACHER_BYTES:,} stored bytes. **Reporting space** `zoo:fmnist-eval`, n = 10,000 samples of latent "
             "seed 0 vs the 10,000 test images; FID / teacher = FID / 2.345. One training run per recipe.", "",
             "| model | MACs x | stored bytes | bytes x | FID / teacher | precision | recall |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in state["rows"].items():
        lines.append(f"| {label} | {TEACHER_MACS / r['macs']:.1f} | {r['weight_bytes']:,} | "
                     f"{TEACHER_BYTES / r['weight_bytes']:.1f} | **{r['fid_ratio']:.3f}** | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} |")
    lines += ["", "Recipes (`runs/qdistill/*.yaml`, written by this script):", ""]
    for label, (text, _) in RUNS.items():
        lines += [f"- {label}:", "", "```yaml", text.rstrip(), "```", ""]
    for note in state.get("notes", []):
        lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    args, state_path, state = sweep_cli(__doc__, "qdistill", list(RUNS))
    if not args.render:
        for label in args.only or list(RUNS):
            state["rows"].update(run_one(label, args.runs, args.threads))
            write_state(state_path, state, threads=args.threads)
    finish_sweep(args, state_path, state, render(state))


if __name__ == "__main__":
    main()

"""``slimgen evaluate`` commands (registered on the shared app)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from slimgen.cli.app import app

_ROWS: tuple[tuple[str, str, str], ...] = (
    # (field, label, format)
    ("fid", "FID (lower is better)", "{:.3f}"),
    ("noise_fid", "noise floor: the teacher's FID on the same reference", "{:.3f}"),
    ("kid_mean", "KID mean", "{:.5f}"),
    ("kid_std", "KID std", "{:.5f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("inception_score", "IS-style score", "{:.3f}"),
    ("psnr", "PSNR vs teacher (dB)", "{:.2f}"),
    ("ssim", "SSIM vs teacher", "{:.4f}"),
    ("feature_distance", "feature distance vs teacher", "{:.4f}"),
    ("params", "parameters", "{:,}"),
    ("nonzero_params", "non-zero parameters", "{:,}"),
    ("macs", "MACs per image", "{:,}"),
    ("weight_bytes", "generator bytes as stored", "{:,}"),
    ("latency_ms_b1", "latency batch 1 (ms)", "{:.3f}"),
    ("latency_ms_b64", "latency batch 64 (ms)", "{:.3f}"),
    ("onnx_latency_ms_b1", "ONNX latency batch 1 (ms)", "{:.3f}"),
    ("onnx_latency_ms_b64", "ONNX latency batch 64 (ms)", "{:.3f}"),
)


def _fmt(value: Any, fmt: str) -> str:
    return value if isinstance(value, str) else fmt.format(value)


def _table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    title = (f"{result['model'] or 'model'}: {result['n']:,} samples (seed {result['seed']}) vs "
             f"{result['reference']} ({result['reference_n']:,}), features {result['extractor']} "
             f"({result.get('extractor_role', 'reporting')} space)")
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, fmt in _ROWS:
        if result.get(key) is not None:
            table.add_row(label, _fmt(result[key], fmt))
    if result.get("class_histogram"):
        names = result.get("class_names") or [str(i) for i in range(len(result["class_histogram"]))]
        hist = ", ".join(f"{n} {p:.0%}" for n, p in zip(names, result["class_histogram"], strict=False))
        table.add_row("predicted classes", hist)
    space = result.get("training_space")
    if space:
        label = f"FID in the training space {space['extractor']} (what selection/perceptual losses saw)"
        table.add_row(label, f"{space['fid']:.3f}")
        if space.get("noise_fid") is not None:
            table.add_row("  its noise floor (teacher)", f"{space['noise_fid']:.3f}")
    table.add_row("threads", str(result["threads"]))
    table.add_row("time (s)", f"{result['seconds']:.1f}")
    return table


@app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME"),
    teacher: str | None = typer.Option(None, "--teacher", help="teacher model: adds PSNR, SSIM, feature distance"),
    reference: str = typer.Option(
        "auto", "--reference", help="auto (Fashion-MNIST for 1x28x28 images, else the teacher's samples), teacher, "
        "or a data set / folder of images of any size"),
    dataset: str | None = typer.Option(None, "--dataset", help="reference data (its test split); same as --reference"),
    n: int = typer.Option(10000, "-n", min=2, help="generated samples"),
    seed: int = typer.Option(0, help="latent seed: the same seed gives the same latents for every model"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    inception_weights: Path | None = typer.Option(
        None, "--inception-weights", help="pytorch-fid Inception weights file: standard Inception FID"),
    extractor: str | None = typer.Option(
        None, "--extractor", help="reporting features: zoo:fmnist-eval (default for 1x28x28), random (any size), a classifier "
        "folder, zoo:NAME, or 'inception' (torch hub cache file)"),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="measure latency (batch 1 and 64)"),
    write: bool = typer.Option(True, "--write/--no-write", help="write metrics.json into the model folder"),
) -> None:
    """Measure quality, fidelity to a teacher and cost of a generative model; write metrics.json."""
    from slimgen.evaluate import evaluate

    result = evaluate(model, teacher=teacher, reference=dataset or reference, n=n, seed=seed, extractor=extractor,
                      inception_weights=inception_weights, latency=latency, progress=sys.stderr.isatty(), write=write)
    data = result.to_dict()
    if as_json:
        typer.echo(json.dumps(data))
        return
    from rich.console import Console

    Console().print(_table(data))

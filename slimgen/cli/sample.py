"""``slimgen sample``."""

from __future__ import annotations

from pathlib import Path

import typer

from slimgen.cli.app import app

RUNTIME_HELP = ("pytorch, onnxruntime, openvino, or auto (the fastest installed for the precision); default: PyTorch fp32, "
                "or the int8 graph (OpenVINO, else ONNX Runtime) for a folder quantized with int8 activations")
PRECISION_HELP = "fp32, bf16 (PyTorch autocast or OpenVINO) or int8 (ONNX Runtime / OpenVINO QDQ graph)"


@app.command("sample")
def sample_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME"),
    n: int = typer.Option(64, "-n", min=1, help="number of images"),
    seed: int = typer.Option(0, help="latent seed: the same seed gives the same latents for every model"),
    out: Path = typer.Option(..., "--out", help=".png for a grid, .npy for uint8 (N, C, H, W)"),
    runtime: str | None = typer.Option(None, "--runtime", help=RUNTIME_HELP),
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    class_: int | None = typer.Option(None, "--class", help="class-conditional models: the class of every image"),
) -> None:
    """Generate N images from fixed-seed latents."""
    from slimgen.sample import sample_to_file

    ran = sample_to_file(model, out, n=n, seed=seed, classes=class_, runtime=runtime, precision=precision)
    typer.echo(f"wrote {out} (ran on {ran})")

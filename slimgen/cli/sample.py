"""``slimgen sample``."""

from __future__ import annotations

from pathlib import Path

import typer

from slimgen.cli.app import app


@app.command("sample")
def sample_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME"),
    n: int = typer.Option(64, "-n", min=1, help="number of images"),
    seed: int = typer.Option(0, help="latent seed: the same seed gives the same latents for every model"),
    out: Path = typer.Option(..., "--out", help=".png for a grid, .npy for uint8 (N, C, H, W)"),
    class_: int | None = typer.Option(None, "--class", help="class-conditional models: the class of every image"),
) -> None:
    """Generate N images from fixed-seed latents."""
    from slimgen.sample import sample_to_file

    sample_to_file(model, out, n=n, seed=seed, classes=class_)
    typer.echo(f"wrote {out}")

"""``slimgen bench``: every runtime side by side (registered on the shared app)."""

from __future__ import annotations

import json
import sys

import typer

from slimgen.cli.app import app


@app.command("bench")
def bench_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME"),
    teacher: str | None = typer.Option(None, "--teacher", help="baseline model (its PyTorch fp32); default: the model itself"),
    batch: int = typer.Option(64, "--batch", min=1, help="images per call"),
    threads: int = typer.Option(2, "--threads", min=1, help="CPU threads for every runtime"),
    rounds: int = typer.Option(5, "--rounds", min=1, help="turns each contender takes"),
    repeats: int = typer.Option(20, "--repeats", min=1, help="timed calls per turn (their median is the turn's figure)"),
    compiled: bool = typer.Option(True, "--compile/--no-compile",
                                  help="also time torch.compile (fp32, bf16; compiling is not timed)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
) -> None:
    """Time a model on every available runtime (PyTorch fp32/bf16 eager and torch.compile, ONNX Runtime fp32/int8,
    OpenVINO fp32/bf16/int8)."""
    from slimgen.models import load_folder
    from slimgen.runtime.bench import bench, markdown

    bundle = load_folder(model)
    base = load_folder(teacher) if teacher is not None else None
    say = (lambda m: typer.echo(m, err=True)) if sys.stderr.isatty() else None
    result = bench(bundle, base, batch=batch, threads=threads, rounds=rounds, repeats=repeats, compiled=compiled,
                   progress=say)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(markdown(result))

"""``slimgen apply`` and ``slimgen methods``: every registered method from the command line, options from its config."""

from __future__ import annotations

from pathlib import Path

import typer

from slimgen.cli.app import OVERWRITE, app, out_folder

SET_HELP = ("a setting of the method's config, typed as in a YAML recipe: epochs=3, losses.output=10, "
            "formats=[onnx] (repeatable; 'slimgen methods NAME' lists them)")


@app.command("apply")
def apply_cmd(
    method: str = typer.Argument(..., help="a registered method (slimgen methods lists them)"),
    model: str = typer.Argument(..., help="model folder or zoo:NAME"),
    out: Path = typer.Option(..., "--out", help="model folder to write (a training method checkpoints in OUT/checkpoint)"),
    settings: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help=SET_HELP),
    teacher: str | None = typer.Option(None, help="the model to compare with / imitate (default: MODEL itself)"),
    dataset: str | None = typer.Option(None, help="real images for training methods (default: the reference's data "
                                       "set, Fashion-MNIST for 1x28x28 models)"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Apply one registered method to a model folder: the same config, function and step record as a recipe step."""
    from slimgen.methods import get_method, parse_assignments
    from slimgen.models import load_folder
    from slimgen.pipeline.runner import apply_to_folder

    chosen = get_method(method)
    config = chosen.config(parse_assignments(settings), f"{method} --set")  # checked before any work
    out_folder(out, overwrite=overwrite, resume=resume)
    written = apply_to_folder(chosen, config, load_folder(model), out, teacher=load_folder(teacher) if teacher else None,
                              dataset=dataset)
    typer.echo(f"wrote {written}")


@app.command("methods")
def methods_cmd(name: str | None = typer.Argument(None, help="a method: list its settings")) -> None:
    """List the registered methods (recipe steps and 'slimgen apply' names), or one method's settings."""
    from rich.console import Console
    from rich.table import Table

    from slimgen.methods import fields_help, get_method, load_library

    if name is None:
        table = Table("method", "config", "what it does")
        for method in sorted(load_library().values(), key=lambda m: m.name):
            table.add_row(method.name, method.config_cls.__name__, method.summary)
    else:
        method = get_method(name)
        table = Table("setting", "type", "default", title=f"{method.name}: {method.config_cls.__name__}")
        for row in fields_help(method.config_cls):
            table.add_row(*row)
    Console(width=max(Console().width, 120)).print(table)

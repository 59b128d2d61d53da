"""``slimgen zoo list|path``."""

from __future__ import annotations

import typer

from slimgen.cli.app import app

zoo_app = typer.Typer(help="Shipped models.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
def zoo_list() -> None:
    """List the shipped models with their stored size and a one-line description."""
    from rich.console import Console
    from rich.table import Table

    from slimgen.models.folder import weight_bytes
    from slimgen.models.zoo import DESCRIPTIONS, zoo_names, zoo_path

    table = Table("name", "weights (bytes)", "description")
    for name in zoo_names():
        table.add_row(f"zoo:{name}", f"{weight_bytes(zoo_path(name)):,}", DESCRIPTIONS.get(name, ""))
    Console().print(table)


@zoo_app.command("path")
def zoo_path_cmd(name: str) -> None:
    """Print the folder of a shipped model (NAME or zoo:NAME)."""
    from slimgen.models.zoo import zoo_path

    typer.echo(str(zoo_path(name.removeprefix("zoo:"))))

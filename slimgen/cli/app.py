"""The typer application that every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(help="slimgen: make trained generative image models smaller and faster.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

"""The ``slimgen`` command line: every command is one call of the library.

Each command group lives in its own module and registers on :data:`slimgen.cli.app.app`.
"""

from __future__ import annotations

import sys

import typer

from slimgen.cli import bench, distill, evaluate, export, importer, pipeline, prune, quantize, sample, train, zoo  # noqa: F401  (register commands)
from slimgen.cli.app import app
from slimgen.errors import SlimgenError


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; no traceback."""
    try:
        app()
    except SlimgenError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted; finished steps and checkpoints are kept", err=True)
        sys.exit(130)


__all__ = ["app", "main"]

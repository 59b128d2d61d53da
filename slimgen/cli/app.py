"""The typer application that every command module registers on, and the plumbing they share.

Shared options: ``slimgen --trust-code MODULE:CLASS COMMAND ...`` (the only way a model folder's
user class is imported from the command line), ``--overwrite`` (:data:`OVERWRITE`) and the
``--out`` check (:func:`out_folder`) that every command writing a model folder calls before any work.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer

app = typer.Typer(help="slimgen: make trained generative image models smaller and faster.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

OVERWRITE = typer.Option(False, "--overwrite", help="replace an existing non-empty --out folder whole "
                                                    "(the old one stays until the new one is complete)")


@app.callback()
def _root(
    trust_code: list[str] = typer.Option(
        [], "--trust-code", metavar="MODULE:CLASS",
        help="import this user architecture when a model folder names it (repeatable; 'module:*' for a whole "
             "module). Without it slimgen never imports code a folder names."),
) -> None:
    """slimgen: make trained generative image models smaller and faster."""
    if trust_code:
        from slimgen.models.registry import trust_code as trust

        trust(*trust_code)


def out_folder(out: Path, *, overwrite: bool, resume: bool = False) -> Path:
    """Check a model-folder ``--out`` before any work; returns ``out``.

    Refused: a shipped zoo folder, an existing file (or a parent that is a file), and an existing
    non-empty folder unless ``overwrite`` (the command then replaces it whole when it finishes)
    or ``resume`` with a ``checkpoint`` in it. ``overwrite`` without ``resume`` drops an old
    checkpoint so the run starts over.
    """
    from slimgen.errors import OutputError
    from slimgen.io import check_out_folder
    from slimgen.models.zoo import is_shipped

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 alone checks (and writes) --out
        return out
    if is_shipped(out):
        raise OutputError(f"{out}: is a shipped zoo model; slimgen never writes into the installed package")
    if resume and (out / "checkpoint").is_dir():
        return check_out_folder(out, overwrite=True)
    if not overwrite and (out / "checkpoint").is_dir() and not (out / "config.json").exists():
        raise OutputError(f"{out}: holds the checkpoint of an unfinished run; pass --resume to continue it or "
                          "--overwrite to start over")
    check_out_folder(out, overwrite=overwrite)
    if overwrite and not resume and (out / "checkpoint").is_dir():
        shutil.rmtree(out / "checkpoint")
    return out


def name_values(items: list[str] | tuple[str, ...], flag: str, example: str, convert: type) -> dict[str, object]:
    """Repeated ``NAME=VALUE`` options (``--layer-ratio net.3=0.8``) -> {name: convert(value)}; a malformed
    one is a ConfigError that shows the expected form."""
    from slimgen.errors import ConfigError

    values: dict[str, object] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            values[name] = convert(value)
        except ValueError:
            name = sep = ""
        if not sep or not name:
            raise ConfigError(f"{flag} takes NAME=VALUE (e.g. {example}), got {item!r}")
    return values

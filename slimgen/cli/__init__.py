"""The ``slimgen`` command line: every command is one call of the library.

Each command group lives in its own module and registers on :data:`slimgen.cli.app.app`.
:func:`main` is the one place that turns errors into the CLI contract: a user's mistake
(a usage error, a bad file, an unwritable path) prints one line starting with ``error:`` and
exits with status 2; nothing prints a traceback (``SLIMGEN_DEBUG=1`` shows it for a bug).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

import typer

from slimgen.cli import (  # noqa: F401  (register commands)
    bench,
    distill,
    evaluate,
    export,
    importer,
    methods,
    pipeline,
    prune,
    quantize,
    sample,
    train,
    zoo,
)
from slimgen.cli.app import app
from slimgen.errors import SlimgenError

USAGE_ERROR = 2


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Inside, third-party chatter stays off the user's terminal (it is not about their model);
    everything comes back as it was afterwards (a program that calls :func:`main` keeps its own settings).

    The ONNX exporter warns about torchvision operators it skips; ONNX Runtime's calibration
    prints are captured where it is called. Warnings read ``warning: ...`` on one line. When
    stderr is not a terminal (CI, a log file), progress bars are off (``TQDM_DISABLE``) and the
    loops' one line per epoch/step remains.
    """
    import torch  # noqa: F401  (torch configures its loggers on import; adjust them afterwards)
    import tqdm.std

    loggers = {name: logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir", "onnxruntime")}
    levels = {name: logger.level for name, logger in loggers.items()}
    original_init, original_format = tqdm.std.tqdm.__init__, warnings.formatwarning
    with warnings.catch_warnings():  # the filters come back on the way out
        try:
            for logger in loggers.values():
                logger.setLevel(logging.ERROR)
            for module in (r"torch\.onnx.*", r"onnxscript.*", r"onnx_ir.*", r"onnxruntime.*", r"torch\.ao.*"):
                warnings.filterwarnings("ignore", module=module)
            warnings.formatwarning = _warning_line  # not the file, line and source of the call
            if not sys.stderr.isatty() and not os.environ.get("SLIMGEN_PROGRESS"):
                # bars off, forced: a call's own disable=... must not turn a bar back on in a log file (tqdm's
                # own TQDM_DISABLE works the same way, but is read when tqdm is imported, which has happened)
                @functools.wraps(original_init)
                def quiet_init(self: object, *args: object, **kwargs: object) -> None:
                    kwargs["disable"] = True
                    original_init(self, *args, **kwargs)  # type: ignore[arg-type]

                tqdm.std.tqdm.__init__ = quiet_init  # type: ignore[method-assign]
            yield
        finally:
            tqdm.std.tqdm.__init__ = original_init  # type: ignore[method-assign]
            warnings.formatwarning = original_format
            for name, logger in loggers.items():
                logger.setLevel(levels[name])


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    return f"warning: {_one_line(str(message))}\n"


def _fail(message: str, code: int = USAGE_ERROR) -> None:
    typer.secho(f"error: {_one_line(message)}", err=True, fg=typer.colors.RED)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point (``slimgen`` and ``python -m slimgen``); ``argv`` defaults to ``sys.argv[1:]``.

    Exit status: 0 done, 2 a user's mistake (one ``error:`` line), 130 interrupted, 1 a bug
    (one ``error:`` line; the traceback with ``SLIMGEN_DEBUG=1``).
    """
    from typer import exceptions as typer_exc
    from typer._click import exceptions as click_exc

    try:
        with quiet_third_party():
            rv = app(args=list(argv) if argv is not None else None, prog_name="slimgen", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(USAGE_ERROR)
    except click_exc.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "slimgen"
        _fail(f"{command}: {exc.format_message()} (see '{command} --help')")
    except click_exc.ClickException as exc:
        _fail(exc.format_message())
    except typer_exc.Abort:
        _fail("aborted", 130)
    except SlimgenError as exc:
        _fail(str(exc))
    except OSError as exc:  # the environment refused: disk full, read-only file system, permissions
        from slimgen.io import describe_os_error

        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{describe_os_error(exc)}")
    except MemoryError:
        _fail("out of memory")
    except KeyboardInterrupt:
        typer.secho("interrupted; finished steps and checkpoints are kept", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("SLIMGEN_DEBUG"):
            raise
        _fail(f"internal error ({type(exc).__name__}: {exc}); rerun with SLIMGEN_DEBUG=1 for the traceback "
              "and report it", 1)
    if rv == 130:  # typer turns Ctrl-C into exit status 130
        typer.secho("interrupted; finished steps and checkpoints are kept", err=True)
    sys.exit(rv if isinstance(rv, int) else 0)  # like click's standalone mode: always exits


__all__ = ["app", "main", "quiet_third_party"]

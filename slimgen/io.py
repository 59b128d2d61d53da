"""Atomic writes of files and whole folders, output-path checks, and safe loading of checkpoints.

Every output goes to a temporary sibling first and is moved into place by one rename, so a
process killed at any moment leaves either the old file/folder or the new one, never a mix.
Write failures (disk full, read-only file system, a parent that is a file) become one-line
:class:`~slimgen.errors.OutputError` messages.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from slimgen.errors import ModelFolderError, OutputError, SlimgenError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def describe_os_error(exc: BaseException) -> str:
    """A short reason for a failed write: the OS's words (``No space left on device``), no errno noise."""
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "no space left on device"
        if exc.errno == errno.EROFS:
            return "read-only file system"
        if exc.strerror:
            return exc.strerror[0].lower() + exc.strerror[1:]
    text = " ".join(str(exc).split())
    short = re.fullmatch(r"(\d+) requested and (\d+) written", text)  # numpy's report of a short write
    if short:
        return f"disk full? only {short[2]} of {short[1]} bytes written"
    return "no space left on device" if "No space left" in text else text or type(exc).__name__


def _is_write_failure(exc: BaseException) -> bool:
    """OSError, or a library's wrapper of one (safetensors reports a full disk as SafetensorError)."""
    text = str(exc)
    return (isinstance(exc, OSError) or re.search(r"\d+ requested and \d+ written", text) is not None
            or any(s in text for s in ("No space left", "Read-only file system", "Permission denied", "Disk quota")))


def prepare_parent(path: str | Path) -> Path:
    """Create ``path``'s parent folders; a parent that is a file or unwritable ends in OutputError."""
    path = Path(path)
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise OutputError(f"{path}: cannot write there: {ancestor} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create its folder {path.parent}: {describe_os_error(exc)}") from exc
    return path


@contextmanager
def _write_failures(path: Path) -> Iterator[None]:
    """Turn a failed write (disk full, read-only, permissions) inside the block into one OutputError line."""
    try:
        yield
    except SlimgenError:
        raise
    except Exception as exc:
        if not _is_write_failure(exc):
            raise
        raise OutputError(f"{path}: cannot write: {describe_os_error(exc)}") from exc


def _tmp_prefix(path: Path) -> str:
    """``.NAME.PID.``: a temporary sibling names its writer, so a later writer can tell it was left behind."""
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or we cannot tell: leave its files alone
    return True


def sweep_stale_siblings(path: Path) -> list[Path]:
    """Remove temporary siblings of ``path`` (``.NAME.PID.*.tmp``) whose writer no longer runs, e.g. after a
    SIGKILL mid-write; a sibling of a live process (a concurrent writer) is left alone. Returns those removed."""
    removed = []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\..*\.tmp$")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto ``path`` only if the block succeeds."""
    path = prepare_parent(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    try:
        sweep_stale_siblings(path)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {describe_os_error(exc)}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _write_failures(path):
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp (and writers that replace it) leave 0600
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _normal_permissions(folder: Path) -> None:
    """mkdtemp leaves 0700 and some writers 0600: give the folder the modes a plain mkdir/open would."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the two existing paths ``a`` and ``b`` in one atomic step (Linux renameat2); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_in_folder(tmp: str | Path, path: str | Path) -> Path | None:
    """Put the finished folder ``tmp`` at ``path`` in one rename; returns where the old folder went (or None).

    The caller deletes the returned old folder. Where the file system cannot exchange two
    folders atomically, the old folder is first renamed aside (a kill between the two renames
    then leaves no folder at ``path`` and the old one under ``.NAME.old-*``), never a mix.
    """
    tmp, path = Path(tmp), Path(path)
    if not path.exists() and not path.is_symlink():
        os.rename(tmp, path)
        return None
    if path.is_symlink() or not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; remove it or choose another --out")
    if _exchange(tmp, path):
        return tmp  # tmp now holds the old folder
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rename(path, aside / "old")
    os.rename(tmp, path)
    return aside


@contextmanager
def atomic_folder(path: str | Path, *, keep: Sequence[str] = ()) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path``; when the block succeeds it replaces ``path`` whole.

    ``keep`` names entries of an existing folder at ``path`` (e.g. ``checkpoint``) that move into
    the new folder after the swap instead of being deleted with the old one.
    """
    path = prepare_parent(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; remove it or choose another --out")
    try:
        sweep_stale_siblings(path)
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {describe_os_error(exc)}") from exc
    old: Path | None = None
    try:
        with _write_failures(path):
            yield tmp
            _normal_permissions(tmp)
            old = swap_in_folder(tmp, path)
            if old is not None:  # the old folder, swapped out: keep what was asked for, drop the rest
                src = old / "old" if (old / "old").is_dir() and old != tmp else old
                for name in keep:
                    if (src / name).exists() and not (path / name).exists():
                        os.rename(src / name, path / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def check_out_folder(path: str | Path, *, overwrite: bool = False, resumable: Sequence[str] = ()) -> Path:
    """Refuse an output folder that would lose or mix data, before any work starts.

    ``path`` may be missing or an empty folder. An existing non-empty folder is refused unless
    ``overwrite`` (the caller then replaces it whole) or it holds only the entries in
    ``resumable`` (e.g. a ``checkpoint`` a resumed run continues from). A file, or a parent
    that is a file, is refused.
    """
    path = Path(path)
    for ancestor in reversed(path.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise OutputError(f"{path}: cannot write there: {ancestor} is a file, not a folder")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputError(f"{path}: exists and is not a folder; remove it or choose another --out")
    if path.is_dir() and not overwrite:
        try:
            entries = sorted(p.name for p in path.iterdir())
        except OSError as exc:
            raise OutputError(f"{path}: cannot read the folder: {describe_os_error(exc)}") from exc
        extra = [e for e in entries if e not in resumable]
        if extra:
            raise OutputError(f"{path}: folder exists and is not empty (holds {extra[0]!r}); pass --overwrite to "
                              "replace it whole, or choose another --out")
    return path


def write_atomic(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text(path: str | Path, text: str) -> None:
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path}: not valid JSON ({exc})") from exc


def load_pickle_checkpoint(path: str | Path, *, trust_pickle: bool = False, trust_hint: str | None = None) -> Any:
    """Load a ``.pt``/``.pth`` file with ``weights_only=True``.

    A file that needs arbitrary unpickling is refused unless ``trust_pickle`` is set, because
    unpickling runs code from the file. ``trust_hint`` is how the caller's user can set it (a
    command's ``--trust-pickle``); without one the message says how to convert the file instead.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError and others for unsafe content
        if not trust_pickle:
            how = (f"pass {trust_hint} only if you trust its source" if trust_hint else
                   "if you trust its source, convert it once in your own Python: torch.load(path, "
                   "weights_only=False), then safetensors.torch.save_file(state_dict, 'weights.safetensors')")
            raise ModelFolderError(
                f"{path}: refused to unpickle: the file holds objects beyond plain tensors, and "
                f"unpickling runs code from the file; {how}"
            ) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelFolderError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from exc

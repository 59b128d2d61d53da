"""Reader for the IDX format of MNIST-style files (optionally gzip-compressed)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from slimgen.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({exc})") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into an array of the shape its header gives."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(
            f"{path}: wrong IDX magic number {data[:4].hex() or '(empty file)'}; "
            "expected 0x0000 followed by a type code and the number of dimensions"
        )
    dtype = np.dtype(_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: IDX header announces shape {tuple(shape)} ({expected} bytes) "
            f"but the file holds {len(data) - header} bytes (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)

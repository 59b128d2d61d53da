"""Storage codecs of quantized weights, registered into :mod:`slimgen.storage` when slimgen is imported:
``linear`` (int2/int4/int8 codes packed several per byte,
scales and zero points beside them) and ``codebook`` (k-means centroids + packed or
entropy-coded indices).

The module's float weights are the dequantized values; encoding recovers the integer codes
from them and refuses a tensor that is no longer on its grid (changed after quantization),
so a model saved as quantized is never silently float.
"""

from __future__ import annotations

import lzma
import math
import zlib
from typing import Any

import numpy as np
import torch

from slimgen.errors import ModelFolderError
from slimgen.quantize.kmeans import codebook_of, nearest_centroid
from slimgen.quantize.linear import QuantizedTensor, qrange, requantize
from slimgen.storage.codecs import register_codec

_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def pack_uint(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes (any shape, each < 2^bits, bits in 1..8) -> uint8 (ceil(numel * bits / 8),).

    Value ``i`` occupies bits ``i*bits .. i*bits + bits - 1`` of the little-endian bit stream
    (two 4-bit codes per byte, low nibble first; four 2-bit codes per byte).
    """
    v = values.reshape(-1).to(torch.int64).numpy().astype(np.uint8)
    if bits == 8:
        return torch.from_numpy(v.copy())
    planes = np.unpackbits(v[:, None], axis=1, bitorder="little")[:, :bits]  # (n, bits)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_uint(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_uint` -> int64 (numel,)."""
    raw = packed.numpy().astype(np.uint8)
    if bits == 8:
        return torch.from_numpy(raw[:numel].astype(np.int64))
    stream = np.unpackbits(raw, count=numel * bits, bitorder="little").reshape(numel, bits)
    weights = (1 << np.arange(bits)).astype(np.int64)
    return torch.from_numpy(stream.astype(np.int64) @ weights)


def _axis(meta: dict[str, Any]) -> int | None:
    axis = meta["params"].get("axis")
    return None if axis is None else int(axis)


@register_codec("linear")
class LinearCodec:
    """Affine integer codes: ``w = (q - zero_point) * scale`` per tensor or per channel.

    params: bits, symmetric, axis (None per tensor), scale and zero_point (lists, one per
    channel), the scheme (``scale_method``) and ``entropy`` ("none" | "lzma" | "zlib": the codes
    compressed on disk, layout as for the codebook codec). Stored: ``.__q`` (packed codes, uint8),
    ``.__scale`` (float32 (C,)), ``.__zero_point`` (uint8 (C,), asymmetric only).
    """

    def encode(self, tensor: torch.Tensor, **params: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        bits, symmetric, axis = int(params["bits"]), bool(params["symmetric"]), params.get("axis")
        scale = torch.tensor(params["scale"], dtype=torch.float32).reshape(-1 if axis is not None else ())
        zp = torch.tensor(params["zero_point"], dtype=torch.int32).reshape(-1 if axis is not None else ())
        qt = requantize(tensor, scale, zp, bits, symmetric, axis)
        err = float((qt.dequantize() - tensor.float()).abs().max()) if tensor.numel() else 0.0
        if err > 1e-5 * float(scale.abs().max()) + 1e-12:
            raise ModelFolderError(f"a linear int{bits} tensor is off its quantization grid by {err:.3g}: it changed "
                                   "after quantization; quantize the model again")
        codes = (qt.q - qt.qmin).reshape(-1)
        packed = pack_uint(codes, bits)
        blob, layout = _entropy_code(packed, codes, params.get("entropy", "none"))
        stored = {".__q": blob, ".__scale": scale.reshape(-1)}
        if not symmetric:
            stored[".__zero_point"] = zp.reshape(-1).to(torch.uint8)
        return stored, {"params": dict(params), "layout": layout, "packed_bytes": packed.numel()}

    def decode(self, stored: dict[str, torch.Tensor], meta: dict[str, Any]) -> torch.Tensor:
        p, shape = meta["params"], meta["shape"]
        bits, symmetric, axis = int(p["bits"]), bool(p["symmetric"]), _axis(meta)
        numel = math.prod(shape)
        qmin = qrange(bits, symmetric)[0]
        codes = _entropy_decode(stored[".__q"], bits, numel, p.get("entropy", "none"), meta.get("layout", "plain"))
        q = (codes + qmin).to(torch.int32).view(shape)
        scale = stored[".__scale"].float()
        zp = stored[".__zero_point"].to(torch.int32) if ".__zero_point" in stored else torch.zeros_like(scale, dtype=torch.int32)
        if axis is None:
            scale, zp = scale.reshape(()), zp.reshape(())
        return QuantizedTensor(q, scale, zp, bits, symmetric, axis).dequantize()


def _entropy_bits(indices: torch.Tensor, k: int) -> float:
    """Shannon bound: bits needed by an ideal order-0 entropy coder for ``indices``."""
    counts = torch.bincount(indices.reshape(-1), minlength=k).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum() * indices.numel())


def _compress(data: bytes, coder: str) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS) if coder == "lzma" else zlib.compress(data, 9)


def _decompress(data: bytes, coder: str) -> bytes:
    return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS) if coder == "lzma" else zlib.decompress(data)


def _entropy_code(packed: torch.Tensor, codes: torch.Tensor, coder: str) -> tuple[torch.Tensor, str]:
    """Integer codes as stored: the packed stream (``coder`` "none"), or the smallest of the plain
    packed stream (when coding does not pay), the compressed packed stream and the compressed
    one-byte-per-code stream. Returns the blob and its layout name."""
    if coder == "none":
        return packed, "packed"
    candidates = {"plain": packed.numpy().tobytes(),
                  "packed": _compress(packed.numpy().tobytes(), coder),
                  "bytes": _compress(codes.reshape(-1).numpy().astype(np.uint8).tobytes(), coder)}
    layout = min(candidates, key=lambda k: len(candidates[k]))
    return torch.frombuffer(bytearray(candidates[layout]), dtype=torch.uint8), layout


def _entropy_decode(blob: torch.Tensor, bits: int, numel: int, coder: str, layout: str) -> torch.Tensor:
    """The ``numel`` integer codes (int64) back from a blob written by :func:`_entropy_code`."""
    if coder != "none" and layout != "plain":
        blob = torch.from_numpy(np.frombuffer(_decompress(blob.numpy().tobytes(), coder), dtype=np.uint8).copy())
        if layout == "bytes":
            return blob.to(torch.int64)[:numel]
    return unpack_uint(blob, bits, numel)


@register_codec("codebook")
class CodebookCodec:
    """Weight sharing: a float32 codebook (2^bits,) and one index per element.

    params: bits, entropy ("none" | "lzma" | "zlib") and the scheme that made the codebook.
    Indices are stored packed (``bits`` per element); with entropy coding, the smallest of the
    compressed packed stream, the compressed one-byte-per-index stream and the plain packed
    stream is stored (``layout``).
    meta records ``packed_bytes``, ``stored_index_bytes`` and the Shannon bound ``entropy_bytes``.
    """

    def encode(self, tensor: torch.Tensor, **params: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        bits, coder = int(params["bits"]), params.get("entropy", "none")
        codebook = codebook_of(tensor, bits)
        if codebook is None:
            raise ModelFolderError(f"a codebook tensor has more than 2^{bits} distinct values: it changed after "
                                   "quantization; quantize the model again")
        idx = nearest_centroid(tensor, codebook).reshape(-1)
        packed = pack_uint(idx, bits)
        meta: dict[str, Any] = {"params": dict(params), "packed_bytes": packed.numel(),
                                "entropy_bytes": math.ceil(_entropy_bits(idx, 2**bits) / 8)}
        index_blob, layout = _entropy_code(packed, idx, coder)
        meta.update(layout=layout, stored_index_bytes=index_blob.numel())
        return {".__codebook": codebook, ".__indices": index_blob}, meta

    def decode(self, stored: dict[str, torch.Tensor], meta: dict[str, Any]) -> torch.Tensor:
        bits, coder, shape = int(meta["params"]["bits"]), meta["params"].get("entropy", "none"), meta["shape"]
        numel = math.prod(shape)
        idx = _entropy_decode(stored[".__indices"], bits, numel, coder, meta.get("layout", "packed"))
        return stored[".__codebook"].float()[idx].view(shape)

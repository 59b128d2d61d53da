"""The codec registry and the dense and sparse-bitmask codecs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from slimgen.errors import ModelFolderError


@dataclass(frozen=True)
class Encoding:
    """How to store one tensor: a codec name and its parameters (JSON-serialisable)."""

    codec: str
    params: dict[str, Any] = field(default_factory=dict)


class Codec(Protocol):
    def encode(self, tensor: torch.Tensor, **params: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """-> (stored tensors keyed by suffix, JSON metadata needed to decode)."""
        ...

    def decode(self, stored: dict[str, torch.Tensor], meta: dict[str, Any]) -> torch.Tensor:
        """stored tensors keyed by suffix + metadata -> float tensor of the original shape."""
        ...


CODECS: dict[str, Codec] = {}


def register_codec(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        CODECS[name] = cls()
        return cls

    return deco


def _codec(name: str) -> Codec:
    if name not in CODECS:
        raise ModelFolderError(f"unknown tensor codec {name!r}; known: {', '.join(sorted(CODECS))}")
    return CODECS[name]


def encode_tensor(name: str, tensor: torch.Tensor, encoding: Encoding) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Encode ``tensor`` stored under ``name``: returns {stored key: tensor} and the metadata for config.json."""
    stored, meta = _codec(encoding.codec).encode(tensor.detach().cpu(), **encoding.params)
    meta = {"codec": encoding.codec, "shape": list(tensor.shape), **meta}
    return {f"{name}{suffix}": t.contiguous() for suffix, t in stored.items()}, meta


def decode_tensor(name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> torch.Tensor:
    """Inverse of :func:`encode_tensor` for one tensor ``name``."""
    prefix = f"{name}"
    stored = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix + ".__") or k == prefix}
    out = _codec(meta["codec"]).decode(stored, meta)
    if list(out.shape) != list(meta["shape"]):
        raise ModelFolderError(f"tensor {name}: decoded shape {list(out.shape)} != recorded {meta['shape']}")
    return out


@register_codec("dense")
class DenseCodec:
    def encode(self, tensor: torch.Tensor, **params: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"": tensor}, {}

    def decode(self, stored: dict[str, torch.Tensor], meta: dict[str, Any]) -> torch.Tensor:
        return stored[""]


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor (any shape) -> uint8 (ceil(numel / 8),), little bit order."""
    return torch.from_numpy(np.packbits(mask.flatten().numpy().astype(np.uint8), bitorder="little"))


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: -> bool (numel,)."""
    bits = np.unpackbits(packed.numpy(), count=numel, bitorder="little")
    return torch.from_numpy(bits.astype(bool))


@register_codec("sparse_bitmask")
class SparseBitmaskCodec:
    """A bitmask of non-zeros (1 bit per element) plus the non-zero values in their own dtype."""

    def encode(self, tensor: torch.Tensor, **params: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        mask = tensor != 0
        return {".__mask": pack_bits(mask), ".__values": tensor[mask]}, {"nnz": int(mask.sum())}

    def decode(self, stored: dict[str, torch.Tensor], meta: dict[str, Any]) -> torch.Tensor:
        shape = meta["shape"]
        numel = int(np.prod(shape)) if shape else 1
        mask = unpack_bits(stored[".__mask"], numel)
        values = stored[".__values"]
        out = torch.zeros(numel, dtype=values.dtype)
        out[mask] = values
        return out.view(shape)

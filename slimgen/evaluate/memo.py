"""What repeated evaluations in one process would compute again: a bounded in-process memo.

A recipe run evaluates every step against the same teacher on the same latents, and its export step
evaluates the very model its quantize step did; a benchmark scores several models against one teacher
over the same seeds. The teacher's samples, their features and the teacher-vs-reference noise floor
are then the same each time, and so are the features of a model that did not change. They are kept
here, keyed by what determines them, and reused: the numbers are the ones a recomputation gives (the
same code on the same inputs), only not computed twice.

A module's key (:func:`module_key`) covers its class and structure (``repr``), every parameter and
buffer (names, dtypes, shapes, bytes), its hooks and the plain attribute values of every submodule
(numbers, strings, tensors): a module changed in place between two calls gets a new key. Compiled
engines (:class:`slimgen.runtime.engines.Engine`, whose outputs no tensor of theirs determines) get
none and are never memoized. ``SLIMGEN_EVAL_MEMO=0`` turns the memo off.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")

MAX_BYTES = 1 << 30  # tensors held at most (LRU beyond)
_PLAIN = (bool, int, float, str, type(None))
_SKIP = {"_parameters", "_buffers", "_modules", "training", "_forward_hooks", "_forward_pre_hooks",
         "_backward_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
         "_state_dict_pre_hooks", "_non_persistent_buffers_set", "_backward_pre_hooks",
         "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
         "_is_full_backward_hook"}


def enabled() -> bool:
    return os.environ.get("SLIMGEN_EVAL_MEMO", "1") != "0"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach()
    if t.is_sparse:
        t = t.to_dense()
    if t.is_quantized:
        t = t.dequantize()
    return t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _update_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
    h.update(_tensor_bytes(t))


def _hook_names(hooks: dict) -> str:
    return ",".join(getattr(f, "__qualname__", type(f).__name__) for f in hooks.values())


def module_key(module: nn.Module) -> str | None:
    """A digest of everything in ``module`` that decides its outputs (see the module docstring); None for an
    engine (or anything else that is not a plain module)."""
    from slimgen.runtime.engines import Engine

    if not isinstance(module, nn.Module) or any(isinstance(m, Engine) for m in module.modules()):
        return None
    h = hashlib.blake2b(digest_size=20)
    h.update(repr(module).encode())
    for name, t in itertools.chain(module.named_parameters(remove_duplicate=False),
                                   module.named_buffers(remove_duplicate=False)):
        _update_tensor(h, name, t)
    for prefix, m in module.named_modules():
        h.update(f"|{prefix}:{type(m).__module__}.{type(m).__qualname__}".encode())
        h.update(_hook_names(m._forward_hooks).encode() + b";" + _hook_names(m._forward_pre_hooks).encode())
        for key, value in sorted(vars(m).items()):
            if key in _SKIP:
                continue
            if isinstance(value, torch.Tensor):
                _update_tensor(h, f"{prefix}.{key}", value)
            elif isinstance(value, _PLAIN) or (isinstance(value, tuple | list) and all(isinstance(v, _PLAIN)
                                                                                       for v in value)):
                h.update(f"{key}={value!r};".encode())
    return h.hexdigest()


def tensors_key(tensors: Iterable[torch.Tensor | None]) -> str:
    """A digest of tensors' dtypes, shapes and bytes (e.g. a batch of latents and labels)."""
    h = hashlib.blake2b(digest_size=20)
    for i, t in enumerate(tensors):
        if t is None:
            h.update(f"{i}:none;".encode())
        else:
            _update_tensor(h, str(i), t)
    return h.hexdigest()


def _size(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, list | tuple):
        return sum(_size(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_size(getattr(value, f)) for f in value.__dataclass_fields__)
    return 0


class Memo:
    """Least-recently-used values by key, holding at most ``max_bytes`` of tensors."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple | None, compute: Callable[[], T]) -> T:
        """The value stored under ``key``, else ``compute()`` (stored when it fits). A None in ``key``, or the
        memo switched off, computes every time."""
        if key is None or any(k is None for k in key) or not enabled():
            return compute()
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key][0]
        self.misses += 1
        value = compute()
        size = _size(value)
        if size <= self.max_bytes:
            self._items[key] = (value, size)
            while sum(s for _, s in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()
        self.hits = self.misses = 0


MEMO = Memo()

"""LayerNorm in channel pruning: which dimension of a LayerNorm holds the channels.

torch-pruning prunes a LayerNorm along the last dimension of its ``normalized_shape``: right for a
LayerNorm over features (B, C) or tokens (B, N, C), wrong for one over a feature map's (C, H, W), as
generators write it (``nn.LayerNorm([256, 4, 4])`` after the stem): it would take W for the channels.
One forward pass tells the two apart by the input each LayerNorm gets:

- normalized over every dimension but the batch: the channels are the first normalized dimension;
- one normalized dimension on a (B, N, C) input: the last (tokens);
- anything else (a LayerNorm over (H, W) only, per channel): it has no channel dimension slimgen can
  tie to a layer's channels, and stays as the layers before it refuse (:func:`channel_dims` says why).

Within :func:`lent_layernorms`, each such LayerNorm's class is a subclass that torch-pruning prunes along
that dimension (its pruner resizes ``normalized_shape``, weight and bias); on leaving, plain LayerNorms.
A pruned LayerNorm reloads from its weight's shape (:mod:`slimgen.models.surgery`); one without
weights records its ``normalized_shape`` in the folder's geometry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from slimgen.models.mode import in_mode
from slimgen.prune.reshape import register_lent

DIMS = (-1, -2, -3, -4)  # (C,), (C, L), (C, H, W), (C, D, H, W)


def _kind(dim: int) -> type[nn.LayerNorm]:
    return type(f"ChannelLayerNorm{-dim}", (nn.LayerNorm,), {"__doc__": f"A LayerNorm whose channels are "
                                                                          f"normalized_shape[{dim}] (lent)."})


class ChannelLayerNormPruner(tp.pruner.function.LayernormPruner):
    """torch-pruning's LayerNorm pruner along one fixed dimension: its graph sets every pruner's ``pruning_dim`` to the
    node's (the last dimension) before asking for a width, which this one ignores."""

    def __init__(self, dim: int) -> None:
        self._dim = dim
        super().__init__(pruning_dim=dim)

    @property
    def pruning_dim(self) -> int:
        return self._dim

    @pruning_dim.setter
    def pruning_dim(self, _value: int) -> None:
        pass


KINDS = {d: _kind(d) for d in DIMS}
PRUNERS = {KINDS[d]: ChannelLayerNormPruner(d) for d in DIMS}
for _k, _p in PRUNERS.items():
    register_lent(_k, _p, norm=True)


def channel_dims(model: nn.Module, run: Callable[[nn.Module], Any]) -> tuple[dict[str, int], dict[str, str]]:
    """``({LayerNorm name: its channel dimension, counted from the end of normalized_shape}, {name: why none})`` from
    one forward pass (``run(model)``); LayerNorms that did not run are in neither."""
    seen: dict[str, tuple[int, int]] = {}  # name -> (input ndim, len(normalized_shape))
    handles = []
    for name, m in model.named_modules():
        if type(m) is nn.LayerNorm:
            def hook(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                if args and isinstance(args[0], torch.Tensor):
                    seen.setdefault(name, (args[0].ndim, len(_m.normalized_shape)))
            handles.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad(), in_mode(model, training=False):
            run(model)
    finally:
        for h in handles:
            h.remove()
    dims: dict[str, int] = {}
    why: dict[str, str] = {}
    for name, (ndim, k) in seen.items():
        if ndim - 1 == k and -k in DIMS:
            dims[name] = -k
        elif k == 1 and ndim == 3:
            dims[name] = -1
        else:
            why[name] = (f"a LayerNorm over the last {k} of its input's {ndim} dimensions: none of them is a "
                         "channel dimension slimgen can tie to a layer's channels")
    return dims, why


@contextlib.contextmanager
def lent_layernorms(model: nn.Module, dims: dict[str, int]) -> Iterator[dict[type, Any]]:
    """Within: each LayerNorm of ``dims`` is of the class torch-pruning prunes along its channel dimension; yields
    the ``customized_pruners`` for torch-pruning. On leaving (also after an error), plain LayerNorms again."""
    lent = [model.get_submodule(n) for n in dims]
    try:
        for m, d in zip(lent, dims.values(), strict=True):
            m.__class__ = KINDS[d]
        yield {KINDS[d]: PRUNERS[KINDS[d]] for d in set(dims.values())}
    finally:
        for m in lent:
            m.__class__ = nn.LayerNorm

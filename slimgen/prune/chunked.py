"""Layers whose output is chunked into equal parts that each join the same channels elsewhere.

AdaIN, FiLM and StyleGAN-style modulation compute a per-channel scale and shift with one layer and
split it: ``s, b = style(w).chunk(2, dim=1); x = norm(x) * (1 + s) + b``. Channel c of ``x`` is then
tied to outputs c and C + c of ``style``. torch-pruning maps those indices through the chunk, but it
also takes ``style`` as a group root of its own (2C channels ranked and cut as one set), which cuts
the chunks unevenly and either removes nothing or far too much. Here such a layer is lent to
torch-pruning as a :class:`Chunked` module, which is no group root: it is pruned only as a member of
the group of the channels its chunks join, at the indices torch-pruning maps through the chunk, and
:class:`ChunkedPruner` checks that every chunk loses the same channels. Afterwards the original
layer (pruned in place) is put back, so the model keeps its own classes and parameter names.

A GLU, whose chunks join only each other (``a * sigmoid(b)``), has no other root to follow: its
layer keeps its channels (reported like any layer torch-pruning leaves whole).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from slimgen.errors import ConfigError

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


class Chunked(nn.Module):
    """Computes ``layer`` (an ``nn.Linear`` or plain ``nn.Conv1d``/``nn.Conv2d``) from its own parameters,
    split into ``chunks`` equal parts downstream; no torch-pruning root type."""

    def __init__(self, layer: nn.Module, chunks: int, name: str) -> None:
        super().__init__()
        self.chunks, self.name = chunks, name
        object.__setattr__(self, "layer", layer)  # not a submodule: torch-pruning must not see it as a layer
        self._bind()

    def _bind(self) -> None:
        self.weight = self.layer.weight
        self.bias = self.layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.layer
        if isinstance(m, nn.Linear):
            return F.linear(x, self.weight, self.bias)
        conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        return conv(x, self.weight, self.bias, m.stride, m.padding, m.dilation, m.groups)


class ChunkedPruner(tp.pruner.function.BasePruningFunc):
    """Prunes the wrapped layer in place; out-channel indices must remove the same channels from every chunk."""

    def prune_out_channels(self, layer: Chunked, idxs: list[int]) -> Chunked:
        size = layer.weight.shape[0] // layer.chunks
        per = [sorted(i - j * size for i in idxs if j * size <= i < (j + 1) * size) for j in range(layer.chunks)]
        if any(p != per[0] for p in per):
            raise ConfigError(
                f"channel pruning would cut the {layer.chunks} chunks of {layer.name!r} unevenly (its output is split "
                f"by chunk and each part joins other channels); list it in ignore=(...) / --ignore")
        out = tp.prune_linear_out_channels if isinstance(layer.layer, nn.Linear) else tp.prune_conv_out_channels
        out(layer.layer, sorted(idxs))
        layer._bind()
        return layer

    def prune_in_channels(self, layer: Chunked, idxs: list[int]) -> Chunked:
        into = tp.prune_linear_in_channels if isinstance(layer.layer, nn.Linear) else tp.prune_conv_in_channels
        into(layer.layer, sorted(idxs))
        layer._bind()
        return layer

    def get_out_channels(self, layer: Chunked) -> int:
        return layer.weight.shape[0]

    def get_in_channels(self, layer: Chunked) -> int:
        return layer.weight.shape[1]


def chunked_producers(graph: tp.DependencyGraph, skip: list[nn.Module]) -> dict[nn.Module, int]:
    """Layers (Linear, plain Conv1d/2d) whose whole output reaches, through elementwise ops only (activations,
    unsqueeze, indexing with None), one chunk/split into equal parts: layer -> number of parts."""
    found: dict[nn.Module, int] = {}
    skipped = {id(m) for m in skip}
    for module, node in graph.module2node.items():
        if type(module) not in _LAYERS or id(module) in skipped or getattr(module, "padding_mode", "zeros") != "zeros" \
                or getattr(module, "groups", 1) != 1:
            continue
        width = module.weight.shape[0]
        splits, stack, seen, other = [], list(node.outputs), set(), False
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if n.type == ops.OPTYPE.SPLIT:
                splits.append(n.module)
            elif n.type == ops.OPTYPE.ELEMENTWISE and len(n.inputs) == 1:
                stack.extend(n.outputs)
            else:
                other = True
        if other or len(splits) != 1:
            continue
        offsets = list(getattr(splits[0], "offsets", None) or [])
        sizes = [b - a for a, b in itertools.pairwise(offsets)]
        if len(sizes) > 1 and len(set(sizes)) == 1 and offsets[-1] == width:
            found[module] = len(sizes)
    return found


@contextmanager
def lent_as_chunked(model: nn.Module, producers: dict[nn.Module, int]) -> Iterator[dict[type, ChunkedPruner]]:
    """Within: each producer replaced by a :class:`Chunked` of it; yields the ``customized_pruners`` for
    torch-pruning. On leaving (also after an error), the producers, pruned in place, are back."""
    names = {id(m): n for n, m in model.named_modules()}
    lent = []
    try:
        for layer, chunks in producers.items():
            name = names[id(layer)]
            parent, _, attr = name.rpartition(".")
            owner = model.get_submodule(parent)
            setattr(owner, attr, Chunked(layer, chunks, name))
            lent.append((owner, attr, layer))
        yield {Chunked: ChunkedPruner()}
    finally:
        for owner, attr, layer in lent:
            setattr(owner, attr, layer)

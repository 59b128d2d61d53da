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

A GLU, whose chunks join only each other (``a * sigmoid(b)``), has no other root to follow: a GLU
*module* is lent as one unit instead (:mod:`slimgen.prune.gated`); a gate written inline keeps its
layer's channels (reported like any layer torch-pruning leaves whole).

Sub-pixel upsampling is the same kind of coupling: ``pixel_shuffle(conv(x), r)`` makes output channel c
from the conv's channels c*r*r ... c*r*r + r*r - 1. torch-pruning takes the shuffle for an elementwise
op, so it would tie channel c to the conv's channel c. Such a conv is lent as a :class:`Shuffled`, which
shows torch-pruning the C channels after the shuffle (its indices are then the right ones) and removes
whole blocks of r*r; it is a group root, so those channels are pruned even where no other layer
produces them.

A learned constant input, StyleGAN's ``const`` (1, C, 4, 4), produces channels that no layer does:
torch-pruning roots groups at layers only, so the first block's input channels were never pruned.
:func:`source_parameters` finds such free parameters (no layer's output channels in their group) and
:func:`prune_source` prunes each with the layers that read it, ranked by their input weights
(torch-pruning cannot root a group at a parameter: it compares its roots with ``==``).
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
from slimgen.prune.reshape import prune_group

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


class _Lent(nn.Module):
    """Computes ``layer`` (an ``nn.Linear`` or plain ``nn.Conv1d``/``nn.Conv2d``) from its own parameters; the
    layer itself is kept aside (no submodule), to be pruned in place and put back."""

    def __init__(self, layer: nn.Module, name: str) -> None:
        super().__init__()
        self.name = name
        object.__setattr__(self, "layer", layer)  # not a submodule: torch-pruning must not see it as a layer
        self._bind()

    def _bind(self) -> None:
        self.weight = self.layer.weight
        self.bias = self.layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.layer
        if isinstance(m, nn.Linear):
            return F.linear(x, self.weight, self.bias)
        if isinstance(m, nn.ConvTranspose1d | nn.ConvTranspose2d):
            up = F.conv_transpose1d if isinstance(m, nn.ConvTranspose1d) else F.conv_transpose2d
            return up(x, self.weight, self.bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation)
        conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        return conv(x, self.weight, self.bias, m.stride, m.padding, m.dilation, m.groups)

    def rows(self) -> torch.Tensor:
        """|weights| summed per output row of the layer (transposed convs hold their outputs in dimension 1)."""
        w = self.weight.detach()
        return (w.transpose(0, 1) if getattr(self.layer, "transposed", False) else w).flatten(1).abs().sum(1)

    def out_scores(self) -> torch.Tensor:
        """L1 per output channel as torch-pruning counts them here: one row each."""
        return self.rows()

    def in_scores(self) -> torch.Tensor:
        w = self.weight.detach()
        return (w if getattr(self.layer, "transposed", False) else w.transpose(0, 1)).flatten(1).abs().sum(1)

    def prune_rows(self, rows: list[int]) -> None:
        out = tp.prune_linear_out_channels if isinstance(self.layer, nn.Linear) else tp.prune_conv_out_channels
        out(self.layer, sorted(rows))
        self._bind()


class Chunked(_Lent):
    """A layer whose output is split into ``chunks`` equal parts downstream; no torch-pruning root type."""

    def __init__(self, layer: nn.Module, chunks: int, name: str) -> None:
        super().__init__(layer, name)
        self.chunks = chunks


class Shuffled(_Lent):
    """A conv whose output a pixel shuffle turns into ``weight.shape[0] // block`` channels (block = r*r)."""

    def __init__(self, layer: nn.Module, block: int, name: str) -> None:
        super().__init__(layer, name)
        self.block = block

    def out_scores(self) -> torch.Tensor:
        return self.rows().reshape(-1, self.block).sum(1)


class _LentPruner(tp.pruner.function.BasePruningFunc):
    def prune_in_channels(self, layer: _Lent, idxs: list[int]) -> _Lent:
        into = tp.prune_linear_in_channels if isinstance(layer.layer, nn.Linear) else tp.prune_conv_in_channels
        into(layer.layer, sorted(idxs))
        layer._bind()
        return layer

    def get_in_channels(self, layer: _Lent) -> int:
        return layer.weight.shape[0 if getattr(layer.layer, "transposed", False) else 1]


class ChunkedPruner(_LentPruner):
    """Out-channel indices must remove the same channels from every chunk."""

    def prune_out_channels(self, layer: Chunked, idxs: list[int]) -> Chunked:
        size = layer.weight.shape[0] // layer.chunks
        per = [sorted(i - j * size for i in idxs if j * size <= i < (j + 1) * size) for j in range(layer.chunks)]
        if any(p != per[0] for p in per):
            raise ConfigError(
                f"channel pruning would cut the {layer.chunks} chunks of {layer.name!r} unevenly (its output is split "
                f"by chunk and each part joins other channels); list it in ignore=(...) / --ignore")
        layer.prune_rows(idxs)
        return layer

    def get_out_channels(self, layer: Chunked) -> int:
        return layer.weight.shape[0]


class ShuffledPruner(_LentPruner):
    """Out-channel indices are channels after the shuffle: each removes its block of r*r rows."""

    def prune_out_channels(self, layer: Shuffled, idxs: list[int]) -> Shuffled:
        layer.prune_rows([c * layer.block + k for c in idxs for k in range(layer.block)])
        return layer

    def get_out_channels(self, layer: Shuffled) -> int:
        return layer.weight.shape[0] // layer.block


def _reach(node: object) -> tuple[list[object], bool]:
    """The chunk/split and pixel-shuffle nodes the output of ``node`` reaches through single-input elementwise ops
    (activations, unsqueeze, indexing with None), and whether it reaches anything else on the way."""
    ends, stack, seen, other = [], list(node.outputs), set(), False
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.type == ops.OPTYPE.SPLIT or "PixelShuffleBackward" in n.name:
            ends.append(n)
        elif n.type == ops.OPTYPE.ELEMENTWISE and len(n.inputs) == 1 and "Shuffle" not in n.name:
            stack.extend(n.outputs)
        else:
            other = True
    return ends, other


def lendable(module: nn.Module, skipped: set[int], types: tuple[type, ...] = _LAYERS) -> bool:
    """A plain layer of ``types`` (exact class), not in ``skipped``, zero-padded and ungrouped: what a lent module
    computes from the layer's own parameters."""
    return (type(module) in types and id(module) not in skipped
            and getattr(module, "padding_mode", "zeros") == "zeros" and getattr(module, "groups", 1) == 1)


def swap(model: nn.Module, name: str, new: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """Put ``new`` in place of the submodule ``name``; returns (owner, attribute, old module) to put it back."""
    parent, _, attr = name.rpartition(".")
    owner = model.get_submodule(parent)
    old = getattr(owner, attr)
    setattr(owner, attr, new)
    return owner, attr, old


def chunked_producers(graph: tp.DependencyGraph, skip: list[nn.Module]) -> dict[nn.Module, int]:
    """Layers (Linear, plain Conv1d/2d) whose whole output reaches, through elementwise ops only (activations,
    unsqueeze, indexing with None), one chunk/split into equal parts: layer -> number of parts."""
    found: dict[nn.Module, int] = {}
    skipped = {id(m) for m in skip}
    for module, node in graph.module2node.items():
        if not lendable(module, skipped):
            continue
        ends, other = _reach(node)
        if other or len(ends) != 1 or ends[0].type != ops.OPTYPE.SPLIT:
            continue
        offsets = list(getattr(ends[0].module, "offsets", None) or [])
        sizes = [b - a for a, b in itertools.pairwise(offsets)]
        if len(sizes) > 1 and len(set(sizes)) == 1 and offsets[-1] == module.weight.shape[0]:
            found[module] = len(sizes)
    return found


def shuffled_producers(graph: tp.DependencyGraph, skip: list[nn.Module]) -> dict[nn.Module, int]:
    """Plain Conv2d layers whose whole output reaches, through activations only, one pixel shuffle:
    layer -> r*r (its upscale factor squared)."""
    found: dict[nn.Module, int] = {}
    skipped = {id(m) for m in skip}
    for module, node in graph.module2node.items():
        if not isinstance(module, nn.Conv2d) or not lendable(module, skipped):
            continue
        ends, other = _reach(node)
        r = getattr(getattr(ends[0], "grad_fn", None), "_saved_upscale_factor", None) if len(ends) == 1 else None
        if other or not isinstance(r, int) or "PixelShuffleBackward" not in ends[0].name \
                or module.weight.shape[0] % (r * r):
            continue
        found[module] = r * r
    return found


@torch.no_grad()
def lent_magnitude(group: tp.Group) -> torch.Tensor | None:
    """L1 importance from the lent layers of ``group`` (torch-pruning's importances skip layers with their own
    pruners): the fallback where nothing else in the group has weights to rank by, as a conv's sub-pixel channels
    read only by the next sub-pixel conv. Per root channel: the sum of |w| over the rows or columns it removes."""
    reduced, found = torch.zeros(len(group[0].idxs)), False
    for i, (dep, idxs) in enumerate(group):
        m, roots = dep.target.module, group[i].root_idxs
        if not isinstance(m, _Lent) or any(r is None for r in roots):
            continue
        scores = m.out_scores() if getattr(dep.handler, "__name__", "") == "prune_out_channels" else m.in_scores()
        reduced.scatter_add_(0, torch.tensor(roots), scores[list(idxs)].float())
        found = True
    return reduced if found else None


@contextmanager
def lent(model: nn.Module, chunked: dict[nn.Module, int],
         shuffled: dict[nn.Module, int]) -> Iterator[dict[type, tp.pruner.function.BasePruningFunc]]:
    """Within: each producer replaced by a :class:`Chunked` / :class:`Shuffled` of it; yields the
    ``customized_pruners`` for torch-pruning. On leaving (also after an error), the producers, pruned in place,
    are back."""
    names = {id(m): n for n, m in model.named_modules()}
    put = []
    try:
        for layers, kind in ((chunked, Chunked), (shuffled, Shuffled)):
            for layer, k in layers.items():
                put.append(swap(model, names[id(layer)], kind(layer, k, names[id(layer)])))
        yield {Chunked: ChunkedPruner(), Shuffled: ShuffledPruner()}
    finally:
        for owner, attr, layer in put:
            setattr(owner, attr, layer)


def _out_channel_fn(dep: object) -> bool:
    return getattr(dep.handler, "__name__", "") == "prune_out_channels"


def source_parameters(graph: tp.DependencyGraph, free: list[tuple[nn.Parameter, int]],
                      roots: tuple[type, ...]) -> list[nn.Parameter]:
    """The free parameters whose channels no layer of the types ``roots`` produces (a learned constant input):
    in their pruning group, no such layer loses output channels."""
    found = []
    for p, dim in free:
        if p not in graph.module2node:  # not reached by the forward
            continue
        group = graph.get_pruning_group(p, graph.get_pruner_of_module(p).prune_out_channels,
                                        idxs=list(range(p.shape[dim])))
        if not any(isinstance(dep.target.module, roots) and _out_channel_fn(dep) for dep, _ in group):
            found.append(p)
    return found


@torch.no_grad()
def prune_source(model: nn.Module, graph: tp.DependencyGraph, param: nn.Parameter, dim: int,
                 importance: tp.importance.Importance, ratio: float) -> int:
    """Remove ``ratio`` of a source parameter's channels (:func:`source_parameters`) with the layers that read them,
    the lowest ranked by ``importance`` over its group (the readers' input weights), by the parameter's own L1
    where the importance finds nothing to rank; returns how many were removed."""
    c = param.shape[dim]
    keep = max(1, int(c * (1 - ratio)))
    if keep >= c:
        return 0
    group = graph.get_pruning_group(param, graph.get_pruner_of_module(param).prune_out_channels, idxs=list(range(c)))
    scores = importance(group)
    if scores is None:
        scores = param.detach().abs().transpose(0, dim).flatten(1).sum(1)
    drop = sorted(torch.argsort(scores.float(), stable=True)[:c - keep].tolist())
    prune_group(model, graph.get_pruning_group(param, graph.get_pruner_of_module(param).prune_out_channels, idxs=drop))
    return c - keep

"""A user's own layer for channel pruning: a module of the model's own class computing from one weight of its own.

Hand-written layers that :func:`slimgen.models.standard.standardize` cannot turn into the torch layer they compute
(rosinality's ``EqualLinear`` with its leaky ReLU fused in: ``lrelu(x @ (w * scale).T + b) * sqrt(2)``; an
equalized conv whose forward adds noise or an activation of its own) were refused by channel pruning in one line
("cannot prune layer 'style.0' of type EqualLinear"), and every channel tied to them was kept with ``--ignore``.

Such a module holds one weight, 2-D ``(C_out, C_in)`` or conv-shaped ``(1, ..., C_out, C_in, k, k)`` (or the other
way round, as a transposed conv keeps it), at most a bias ``(C_out,)`` and scalars besides, and no submodule with
parameters. Each one (:func:`own_units`: found by its parameters, then by running the model once) is lent to
torch-pruning as an :class:`OwnLayer`: the user's own forward run as a single autograd node over the input and the
module's parameters, whose output channels are the weight's C_out dimension (and the bias), its input channels the
C_in one. A module is lent only where a trial on its own recorded input shows that removing an input and an output
channel from its tensors computes what the whole module computes with that input channel zero (so its forward is a
per-channel map of a weighted sum over input channels: the channels slimgen would remove are really the ones it
computes), and where the model, so changed, computes the same images. The module itself, with its own class and
forward, is back afterwards, its tensors sliced in place (:func:`lent_own`); in a traced (width-agnostic) graph the
modules stay leaves (:func:`own_modules`).

:class:`slimgen.prune.modulated.ModulatedCore` is such a layer with a second input, the style's scales.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from slimgen.models.graph import sync_own_weight
from slimgen.models.mode import in_mode
from slimgen.models.surgery import users_layer
from slimgen.prune.chunked import _Lent, swap
from slimgen.prune.gated import _OneNode, _same, seeded
from slimgen.prune.reshape import LENT_PRUNERS, register_lent


@dataclass(frozen=True)
class OwnUnit:
    """A user's layer ``name``: its weight and bias parameters (attribute names) and the weight's output- and
    input-channel dimensions."""

    name: str
    weight: str
    bias: str | None
    out_dim: int
    in_dim: int


class OwnLayer(_Lent):
    """A user's layer as one torch-pruning layer: ``x -> the module's output``, a single autograd node. No submodules:
    the module is kept aside and its tensors sliced in place."""

    def __init__(self, module: nn.Module, unit: Any) -> None:
        object.__setattr__(self, "unit", unit)  # before _Lent binds the parameters by these names
        super().__init__(module, unit.name)

    def _bind(self) -> None:
        self.weight = getattr(self.layer, self.unit.weight)
        self.bias = getattr(self.layer, self.unit.bias) if self.unit.bias else None

    def train(self, mode: bool = True) -> OwnLayer:
        super().train(mode)
        self.layer.train(mode)  # not a submodule, so set here
        return self

    def _params(self) -> list[torch.Tensor]:
        return [p for p in (self.weight, self.bias) if p is not None]

    def forward(self, x: torch.Tensor, *rest: Any, **kwargs: Any) -> torch.Tensor:
        return _OneNode.apply(lambda x_: self.layer(x_, *rest, **kwargs), 1, x, *self._params())

    def _by(self, dim: int) -> torch.Tensor:
        return self.weight.detach().movedim(dim, 0).flatten(1).abs().sum(1)

    def rows(self) -> torch.Tensor:
        return self._by(self.unit.out_dim)

    def in_scores(self) -> torch.Tensor:
        return self._by(self.unit.in_dim)

    def prune(self, dim: int, idxs: list[int]) -> None:
        """Remove the channels ``idxs`` of the weight's dimension ``dim`` (and of the bias, for output channels)."""
        cut(self.layer, self.unit, dim, idxs)
        self._bind()


def cut(module: nn.Module, unit: Any, dim: int, idxs: list[int]) -> None:
    """Remove the channels ``idxs`` of ``module``'s weight dimension ``dim`` in place (the bias's too where ``dim`` is
    the output one); the int width attributes a fused forward reads follow."""
    names = [(unit.weight, dim)] + ([(unit.bias, 0)] if unit.bias and dim == unit.out_dim else [])
    for attr, d in names:
        p = getattr(module, attr)
        keep = torch.tensor(sorted(set(range(p.shape[d])) - set(idxs)), dtype=torch.long)
        setattr(module, attr, nn.Parameter(p.detach().index_select(d, keep).clone(), requires_grad=p.requires_grad))
    sync_own_weight(module)  # widths a fused forward reads (rosinality's ``self.out_channel``)


class OwnPruner(tp.pruner.function.BasePruningFunc):
    """Output channels are the weight's ``out_dim`` (and the bias), input channels its ``in_dim``."""

    def prune_out_channels(self, layer: OwnLayer, idxs: list[int]) -> OwnLayer:
        layer.prune(layer.unit.out_dim, list(idxs))
        return layer

    def prune_in_channels(self, layer: OwnLayer, idxs: list[int]) -> OwnLayer:
        layer.prune(layer.unit.in_dim, list(idxs))
        return layer

    def get_out_channels(self, layer: OwnLayer) -> int:
        return layer.weight.shape[layer.unit.out_dim]

    def get_in_channels(self, layer: OwnLayer) -> int:
        return layer.weight.shape[layer.unit.in_dim]


register_lent(OwnLayer, OwnPruner())


def _orientations(module: nn.Module) -> list[OwnUnit]:
    """The ways ``module``'s parameters can be read as one layer: a weight 2-D or conv-shaped (leading 1s allowed),
    output then input channels or the other way round, with at most a bias (C_out,) and scalars besides; no
    submodule holding parameters. Empty where they cannot."""
    if not users_layer(module) or isinstance(module, _Lent) or any(True for c in module.children() for _ in c.parameters()):
        return []
    own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.numel() > 1]
    weights = [(n, p) for n, p in own if p.ndim == 2 or (p.ndim >= 4 and all(s == 1 for s in p.shape[:-4]))]
    if len(weights) != 1:
        return []
    wname, w = weights[0]
    first = w.ndim - 2 if w.ndim == 2 else w.ndim - 4
    if min(w.shape[first], w.shape[first + 1]) < 2:  # a (1, C, 1, 1) scale or noise strength: a free parameter
        return []
    rest = [(n, p) for n, p in own if n != wname]
    if len(rest) > 1 or any(p.ndim != 1 for _, p in rest):
        return []
    units = []
    for out_dim, in_dim in ((first, first + 1), (first + 1, first)):
        if all(p.shape[0] == w.shape[out_dim] for _, p in rest):
            units.append(OwnUnit("", wname, rest[0][0] if rest else None, out_dim, in_dim))
    return units


def own_modules(model: nn.Module) -> list[str]:
    """Names of the modules whose parameters could make one such layer (to keep whole in a traced graph)."""
    return [n for n, m in model.named_modules() if n and _orientations(m)]


def _channel_local(module: nn.Module, unit: OwnUnit, args: tuple[Any, ...], kwargs: dict[str, Any],
                   out: torch.Tensor) -> bool:
    """Whether removing input channel 0 and the last output channel from a copy of ``module``'s tensors computes, on
    its recorded input, what the module computes with input channel 0 zero, less its last output channel (two
    different indices: the two readings of a square weight remove different entries)."""
    x = args[0]
    w = getattr(module, unit.weight)
    c_in, c_out = w.shape[unit.in_dim], w.shape[unit.out_dim]
    if x.shape[1] != c_in or out.shape[1] != c_out or c_in < 2 or c_out < 2:
        return False
    small = copy.deepcopy(module)
    cut(small, unit, unit.out_dim, [c_out - 1])
    cut(small, unit, unit.in_dim, [0])
    zeroed = x.clone()
    zeroed[:, 0] = 0
    try:
        with in_mode(module):
            expected = seeded(lambda m: m(zeroed, *args[1:], **kwargs), module)[:, :-1]
            got = seeded(lambda m: m(x[:, 1:], *args[1:], **kwargs), small)
    except (RuntimeError, ValueError, IndexError, TypeError):
        return False
    return isinstance(got, torch.Tensor) and got.shape == expected.shape and _same(got, expected)


@torch.no_grad()
def own_units(model: nn.Module, run: Callable[[nn.Module], object], skip: list[nn.Module]) -> list[OwnUnit]:
    """The user's own layers of ``model`` (``run(model)`` calls it), each called once on an input (B, C_in, ...) as
    its first argument, returning (B, C_out, ...), with channels that the trial shows are its weight's, and lendable
    without changing the model's output."""
    skipped = {id(m) for m in skip}
    found = {n: u for n, m in model.named_modules() if n and id(m) not in skipped and (u := _orientations(m))}
    if not found:
        return []
    calls: dict[str, list[tuple[Any, Any, Any]]] = {n: [] for n in found}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda mod, a, k, o, n=n: calls[n].append((a, k, o)), with_kwargs=True) for n in found]
    expected = run_hooked(model, run, handles)
    units = []
    for n, orientations in found.items():
        if len(calls[n]) != 1:
            continue
        args, kwargs, out = calls[n][0]
        if not (args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor) and args[0].dim() >= 2
                and out.dim() == args[0].dim()):
            continue
        module = model.get_submodule(n)
        local = [u for u in orientations if _channel_local(module, u, args, kwargs, out)]
        if len(local) != 1:  # neither reading (or both, a square weight that cannot tell them apart)
            continue
        unit = OwnUnit(n, local[0].weight, local[0].bias, local[0].out_dim, local[0].in_dim)
        if lends_unchanged(model, run, expected, lambda unit=unit: lent_own(model, [unit])):
            units.append(unit)
    return units


def run_hooked(model: nn.Module, run: Callable[[nn.Module], object], handles: list[Any]) -> object:
    """``run(model)`` in the model's mode with the RNG seeded; the hooks ``handles`` removed afterwards."""
    try:
        with in_mode(model):
            return seeded(run, model)
    finally:
        for h in handles:
            h.remove()


def lends_unchanged(model: nn.Module, run: Callable[[nn.Module], object], expected: object,
                    lend: Callable[[], AbstractContextManager[object]]) -> bool:
    """Whether ``run(model)`` within ``lend()`` still gives ``expected`` (the RNG seeded the same: noise injection)."""
    try:
        with lend(), in_mode(model):
            return _same(seeded(run, model), expected)
    except (RuntimeError, ValueError, IndexError, TypeError):
        return False


@contextmanager
def lending(model: nn.Module, units: list[Any], make: Callable[[nn.Module, Any], nn.Module],
            pruners: dict[type, tp.pruner.function.BasePruningFunc]
            ) -> Iterator[dict[type, tp.pruner.function.BasePruningFunc]]:
    """Within: each unit's module (``unit.name``) replaced by ``make(module, unit)``; yields ``pruners`` (the
    ``customized_pruners``). On leaving (also after an error), the modules, their tensors pruned in place, are back."""
    put = []
    try:
        for u in units:
            put.append(swap(model, u.name, make(model.get_submodule(u.name), u)))
        yield pruners
    finally:
        for owner, attr, old in reversed(put):
            setattr(owner, attr, old)


def lent_own(model: nn.Module, units: list[OwnUnit]) -> AbstractContextManager[dict[type, Any]]:
    """Within: each unit's module an :class:`OwnLayer` (see :func:`lending`)."""
    return lending(model, units, OwnLayer, {OwnLayer: LENT_PRUNERS[OwnLayer]})

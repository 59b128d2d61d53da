"""Modulated convolutions (StyleGAN2) for channel pruning: a weight scaled per sample by a style.

StyleGAN2's layer holds a conv weight ``(C_out, C_in, k, k)`` (rosinality's code: ``(1, C_out, C_in, k, k)``), a
``Linear`` (the "affine") that maps the style ``w`` to one scale per input channel, and often a bias ``(C_out,)``;
its forward scales the weight per sample, demodulates it (divides each output row by its norm) and runs a grouped
``F.conv2d`` over the batch. torch-pruning, which knows layers by type, cannot prune such a module, and its trace
through the per-sample reshapes ties nothing to anything: slimgen refused the model in one line.

Channel c_in of the input meets row c_in of the affine and column c_in of the weight; channel c_out of the output is
row c_out of the weight and entry c_out of the bias. Demodulation only rescales each output row by its own norm, so
removing channels leaves the rest of the computation as it was. Each such module (:func:`modulated_units`: found
by its parameters and by running the model once) is lent to torch-pruning as a :class:`Modulated` container of
two: the module's own affine, a real ``Linear``, and a :class:`ModulatedCore` layer, the user's own forward run as a
single autograd node over the input and the affine's output (the affine replaced by that output). torch-pruning
then ties the core's input channels to the affine's rows and to whatever produced the input. The affine cannot sit
inside the core: torch-pruning ignores the submodules of a layer it has a custom pruner for. A module is lent only
where the model so changed computes the same images. Pruning slices the module's own weight and bias in place; the
module itself, with its own class and forward, is back afterwards (:func:`lent_modulated`). In a traced
(width-agnostic) graph the modules stay leaves (:func:`modulated_modules`): inlined, their per-sample reshapes made
torch-pruning's grouping run away.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimgen.models.surgery import conv_weight_of
from slimgen.prune.chunked import _Lent
from slimgen.prune.gated import _OneNode
from slimgen.prune.own import OwnLayer, OwnPruner, lending, lends_unchanged, run_hooked
from slimgen.prune.reshape import LENT_PRUNERS, register_lent


@dataclass(frozen=True)
class ModulatedUnit:
    """A modulated conv module ``name``: its weight and bias parameters and its affine ``Linear`` (attribute
    names), and the weight's output-channel dimension (its input channels are the next one)."""

    name: str
    weight: str
    bias: str | None
    affine: str
    out_dim: int

    @property
    def in_dim(self) -> int:
        return self.out_dim + 1


class _Stop(Exception):
    """Raised by :class:`_Probe` once the affine's input is seen: the rest of the forward is not needed."""


class _Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: tuple[Any, ...] = ()

    def forward(self, *args: Any) -> torch.Tensor:
        self.seen = args
        raise _Stop


class _Given(nn.Module):
    """Stands in for the affine: returns the scales computed outside the node."""

    def __init__(self, s: torch.Tensor) -> None:
        super().__init__()
        self.s = s

    def forward(self, *args: Any) -> torch.Tensor:
        return self.s


class ModulatedCore(OwnLayer):
    """The weight part of a modulated conv: ``(x, s) -> the module's output`` as one torch-pruning layer, ``s`` the
    affine's output (B, C_in): an :class:`~slimgen.prune.own.OwnLayer` with a second input. No submodules:
    torch-pruning ignores those of a layer it has a pruner for."""

    def call(self, stand_in: nn.Module, x: torch.Tensor, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        """The module's own forward with ``stand_in`` in place of its affine."""
        inner, attr = self.layer, self.unit.affine
        affine = getattr(inner, attr)
        setattr(inner, attr, stand_in)
        try:
            return inner(x, *rest, **kwargs)
        finally:
            setattr(inner, attr, affine)

    def forward(self, x: torch.Tensor, s: torch.Tensor, rest: tuple[Any, ...] = (),  # type: ignore[override]
                kwargs: dict[str, Any] | None = None) -> torch.Tensor:
        return _OneNode.apply(lambda x_, s_: self.call(_Given(s_), x_, rest, kwargs or {}), 2, x, s, *self._params())


class Modulated(nn.Module):
    """A modulated conv module, lent: its affine (the module's own ``Linear``, which torch-pruning ties to the style
    and to the input channels) and a :class:`ModulatedCore` ``core`` for the rest."""

    def __init__(self, module: nn.Module, unit: ModulatedUnit) -> None:
        super().__init__()
        self.affine = getattr(module, unit.affine)
        self.core = ModulatedCore(module, unit)

    def forward(self, x: torch.Tensor, *rest: Any, **kwargs: Any) -> torch.Tensor:
        probe = _Probe()
        try:
            self.core.call(probe, x, rest, kwargs)  # the probe's forward raises _Stop
        except _Stop:
            pass
        s = self.affine(*probe.seen)  # (B, C_in)
        return self.core(x, s, rest, kwargs)


register_lent(ModulatedCore, OwnPruner())  # output channels: the weight's out_dim and the bias; input: the next


def _candidate(module: nn.Module) -> ModulatedUnit | None:
    """The parameters of a modulated conv: one weight (1, ..., C_out, C_in, kh, kw), at most a bias (C_out,) and
    scalars besides, and exactly one Linear child with C_in outputs (no other child holding parameters)."""
    if isinstance(module, nn.modules.conv._ConvNd | nn.Linear | _Lent | Modulated):
        return None
    own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.numel() > 1]
    weights = [(n, found) for n, _ in own if (found := conv_weight_of(module, n)) is not None]
    if len(weights) != 1:
        return None
    wname, (w, out_dim) = weights[0]
    c_out, c_in = w.shape[out_dim], w.shape[out_dim + 1]
    rest = [(n, p) for n, p in own if n != wname]
    if len(rest) > 1 or any(p.shape != (c_out,) for _, p in rest):
        return None
    linears = [n for n, c in module.named_children() if type(c) is nn.Linear and c.out_features == c_in]
    others = [c for n, c in module.named_children() if n not in linears and any(True for _ in c.parameters())]
    if len(linears) != 1 or others:
        return None
    return ModulatedUnit("", wname, rest[0][0] if rest else None, linears[0], out_dim)


def modulated_modules(model: nn.Module) -> list[str]:
    """Names of the modules whose parameters look like a modulated conv's (to keep whole in a traced graph)."""
    return [n for n, m in model.named_modules() if n and _candidate(m) is not None]


@torch.no_grad()
def modulated_units(model: nn.Module, run: Callable[[nn.Module], object], skip: list[nn.Module]) -> list[ModulatedUnit]:
    """The modulated conv modules of ``model`` (``run(model)`` calls it): each called once on an input (B, C_in, ...)
    as its first argument, returning (B, C_out, ...), calling its affine once, and lendable without changing the
    model's output."""
    skipped = {id(m) for m in skip}
    found = {}
    for name, m in model.named_modules():
        unit = _candidate(m) if name and id(m) not in skipped else None
        if unit is not None:
            found[name] = ModulatedUnit(name, unit.weight, unit.bias, unit.affine, unit.out_dim)
    if not found:
        return []
    calls: dict[str, list[tuple[Any, Any]]] = {n: [] for n in found}
    affine_calls: dict[str, int] = dict.fromkeys(found, 0)
    handles = []
    for n in found:
        m = model.get_submodule(n)
        handles.append(m.register_forward_hook(lambda mod, a, o, n=n: calls[n].append((a, o))))
        handles.append(getattr(m, found[n].affine).register_forward_hook(
            lambda mod, a, o, n=n: affine_calls.__setitem__(n, affine_calls[n] + 1)))
    expected = run_hooked(model, run, handles)
    units = []
    for n, unit in found.items():
        w = getattr(model.get_submodule(n), unit.weight)
        if len(calls[n]) != 1 or affine_calls[n] != 1:
            continue
        args, out = calls[n][0]
        if not (args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor) and args[0].dim() >= 3
                and out.dim() >= 3 and args[0].shape[1] == w.shape[unit.out_dim + 1]
                and out.shape[1] == w.shape[unit.out_dim]):
            continue
        if lends_unchanged(model, run, expected, lambda unit=unit: lent_modulated(model, [unit])):
            units.append(unit)
    return units


def lent_modulated(model: nn.Module, units: list[ModulatedUnit]) -> AbstractContextManager[dict[type, Any]]:
    """Within: each unit's module a :class:`Modulated` (see :func:`slimgen.prune.own.lending`)."""
    return lending(model, units, Modulated, {ModulatedCore: LENT_PRUNERS[ModulatedCore]})

"""Gated linear units (GLU) for channel pruning: ``a, b = halves of conv(x)``, ``a * sigmoid(b)``.

FastGAN's up-sampling blocks are conv -> BatchNorm -> GLU, the GLU written as ``nn.GLU(1)``, ``chunk(2, 1)``
or two slices. Output channel c is made of the conv's channels c and C + c. torch-pruning ranks the conv's
2C channels as one set and cannot follow the halves back to pairs (through slices it does not track them at
all), so such a model failed to prune or lost far too many channels.

Here each such unit (:func:`gated_units`: found by running the model once and checking the GLU module's
output against ``a * sigmoid(b)``) is lent to torch-pruning as one :class:`Gated` layer with C output
channels: the layer, the norm between and the GLU computed inside it, the norm and the GLU module replaced
by identities meanwhile. A unit is lent only where the model so changed computes the same images (nothing
else reads the layer's or the norm's output). Removing channel c removes the layer's rows c and C + c and
the norm's entries c and C + c; afterwards the pruned layer and norm and the GLU module are back in place
(:func:`lent_units`). Only GLU *modules* are found: a gate written inline in a forward (``F.glu(x, 1)``)
keeps its layers whole, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from slimgen.models.mode import in_mode
from slimgen.prune.chunked import _Lent, _LentPruner, lendable, swap

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d, nn.InstanceNorm2d)
_PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


@dataclass
class GatedUnit:
    """A producer layer, the norm after it (or None) and the GLU module that halves their 2C channels, by name."""

    layer: str
    norm: str | None
    glu: str


def _is_glu(x: torch.Tensor, out: torch.Tensor) -> bool:
    if x.dim() < 2 or x.shape[1] % 2:
        return False
    c = x.shape[1] // 2
    return out.shape == (x.shape[0], c, *x.shape[2:]) and torch.allclose(
        out, x[:, :c] * torch.sigmoid(x[:, c:]), atol=1e-6, rtol=1e-5)


class _OneNode(torch.autograd.Function):
    """``fn(*inputs)`` (the first ``n`` tensors) as a single autograd node over them and ``params`` (the rest); its
    backward recomputes ``fn`` with gradients. torch-pruning, which traces the autograd graph, sees one node."""

    @staticmethod
    def forward(ctx: object, fn: Callable[..., torch.Tensor], n: int, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.fn, ctx.n = fn, n
        ctx.save_for_backward(*tensors)
        return fn(*tensors[:n])

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(t.requires_grad) for t in saved[: ctx.n]]
            out = ctx.fn(*inputs)
            every = (*inputs, *saved[ctx.n:])
            wanted = [t for t in every if t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True)) if wanted else iter(())
        return (None, None, *[next(grads) if t.requires_grad else None for t in every])


class Gated(_Lent):
    """``glu(norm(layer(x)))`` as one layer of C output channels (the layer has 2C); a torch-pruning root."""

    def __init__(self, layer: nn.Module, norm: nn.Module | None, glu: nn.Module, name: str) -> None:
        super().__init__(layer, name)
        object.__setattr__(self, "norm", norm)  # not submodules: torch-pruning must see one layer
        object.__setattr__(self, "glu", glu)

    def train(self, mode: bool = True) -> Gated:
        super().train(mode)
        for m in (self.norm, self.glu):  # not submodules, so set here: a norm in train mode updates its statistics
            if m is not None:
                m.train(mode)
        return self

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return self.glu(self.norm(y) if self.norm is not None else y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one autograd node: torch-pruning, which traces the autograd graph, sees one layer and not the slices inside
        return _OneNode.apply(self._compute, 1, x, *[p for p in (self.weight, self.bias) if p is not None])

    def out_scores(self) -> torch.Tensor:
        rows = self.rows()
        return rows[: len(rows) // 2] + rows[len(rows) // 2:]

    def prune_channels(self, idxs: list[int]) -> None:
        c = len(self.rows()) // 2
        rows = sorted([*idxs, *(c + i for i in idxs)])
        if self.norm is not None and getattr(self.norm, "num_features", None) == 2 * c:
            if self.norm.weight is not None or self.norm.running_mean is not None:
                tp.prune_batchnorm_out_channels(self.norm, rows)
            self.norm.num_features = 2 * c - len(rows)
        self.prune_rows(rows)


class GatedPruner(_LentPruner):
    """Out-channel indices are the GLU's channels: each removes the layer's two rows (and the norm's entries)."""

    def prune_out_channels(self, layer: Gated, idxs: list[int]) -> Gated:
        layer.prune_channels(list(idxs))
        return layer

    def get_out_channels(self, layer: Gated) -> int:
        return len(layer.rows()) // 2


def _same(a: object, b: object) -> bool:
    """Outputs equal to float rounding: tensors, or tuples/lists of them."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return False


def seeded(run: Callable[[nn.Module], object], model: nn.Module) -> object:
    """``run(model)`` with the global RNG seeded (and restored afterwards): a model that draws noise in its forward
    (StyleGAN's and FastGAN's noise injection) computes the same twice, so a trial can be compared with it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return run(model)


def glu_modules(model: nn.Module, run: Callable[[nn.Module], object]) -> list[str]:
    """Names of the modules that compute a GLU, whatever produces their input (to keep whole in a traced graph)."""
    return [u.glu for u in gated_units(model, run, [], checked=False)]


@torch.no_grad()
def gated_units(model: nn.Module, run: Callable[[nn.Module], object], skip: list[nn.Module], *,
                checked: bool = True) -> list[GatedUnit]:
    """The layer [-> BatchNorm/InstanceNorm] -> GLU module chains of ``model`` (``run(model)`` calls it), each
    module called once and the chain lendable without changing the model's output (``checked=False``: every
    module computing a GLU, its producer unchecked)."""
    names = {id(m): n for n, m in model.named_modules()}
    calls: dict[int, int] = {}
    made: dict[int, nn.Module] = {}  # id(output tensor) -> the module that returned it
    read: dict[int, int] = {}  # id(module) -> id(its first input tensor)
    seen: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    alive: list[object] = []  # every hooked tensor lives until the end: no id is reused by a later tensor

    def hook(m: nn.Module, args: tuple, out: object) -> None:
        alive.append((args, out))
        calls[id(m)] = calls.get(id(m), 0) + 1
        if isinstance(out, torch.Tensor):
            made[id(out)] = m
        if args and isinstance(args[0], torch.Tensor):
            read[id(m)] = id(args[0])
            if isinstance(out, torch.Tensor) and not any(True for _ in m.parameters()) and not list(m.children()):
                seen.append((m, args[0], out))

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with in_mode(model):  # eval: a BatchNorm in train mode would update its running statistics
            expected = seeded(run, model)
    finally:
        for h in handles:
            h.remove()
    skipped = {id(m) for m in skip}
    units = []
    for glu, x, out in seen:
        if calls[id(glu)] != 1 or not _is_glu(x, out):
            continue
        norm, layer = made.get(id(x)), None
        if isinstance(norm, _NORMS) and calls.get(id(norm)) == 1:
            layer = made.get(read.get(id(norm), -1))
        else:
            layer, norm = norm, None
        if not checked:
            units.append(GatedUnit(names.get(id(layer), ""), None, names[id(glu)]))
            continue
        if layer is None or not lendable(layer, skipped, _PRODUCERS) or calls.get(id(layer)) != 1:
            continue
        unit = GatedUnit(names[id(layer)], names[id(norm)] if norm is not None else None, names[id(glu)])
        try:
            with lent_units(model, [unit]), in_mode(model):
                same = _same(seeded(run, model), expected)
        except (RuntimeError, ValueError, IndexError, TypeError):
            same = False  # the layer's or norm's output is read elsewhere too
        if same:
            units.append(unit)
    return units


@contextmanager
def lent_units(model: nn.Module, units: list[GatedUnit]) -> Iterator[dict[type, tp.pruner.function.BasePruningFunc]]:
    """Within: each unit's layer a :class:`Gated`, its norm and GLU module identities; yields the
    ``customized_pruners``. On leaving (also after an error), the layers, pruned in place, are back."""
    put = []
    try:
        for u in units:
            layer, glu = model.get_submodule(u.layer), model.get_submodule(u.glu)
            norm = model.get_submodule(u.norm) if u.norm is not None else None
            put.append(swap(model, u.glu, nn.Identity()))
            if u.norm is not None:
                put.append(swap(model, u.norm, nn.Identity()))
            put.append(swap(model, u.layer, Gated(layer, norm, glu, u.layer)))
        yield {Gated: GatedPruner()}
    finally:
        for owner, attr, old in reversed(put):
            setattr(owner, attr, old)

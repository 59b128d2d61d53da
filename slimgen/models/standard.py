"""Custom layers that compute a standard layer, swapped for it: equalized learning rate and the like.

ProGAN and StyleGAN code (and much code derived from it) writes its convolutions and linear layers
as leaf modules that hold ``weight`` (O, I, k, k) or (O, I) and ``bias`` (O,) themselves and call
``F.conv2d(x, self.weight * self.scale, self.bias, ...)`` in forward (equalized learning rate).
At inference such a layer *is* an ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.Linear`` whose
weight is ``weight * scale``; channel pruning, quantization and export only know the standard
layers. :func:`standardize` finds those leaves, checks on the model's own activations (one forward
of example inputs) which standard layer reproduces each one's output (to 1e-5 of its scale),
and swaps it in with the scale folded into the weight (and a bias multiplier into the bias); a leaf no standard layer reproduces
(a modulated convolution, anything nonlinear) is left alone, and channel pruning still names it.

**How it is stored.** The part's config records ``"standard_layers": {name: {"op": "conv2d",
"stride": [s, s], "padding": [p, p], ...}}``; loading builds the user's class, swaps the same
leaves for the recorded layers (shapes from the fresh weights), then resizes and loads the saved
(folded) weights. Nothing executable is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimgen.errors import ModelFolderError
from slimgen.models.surgery import users_layer

_ATTR = "_slimgen_standard_layers"
TOLERANCE = 1e-5  # max |error| over the output's max |value| for a swap to count as exact
OPS = ("linear", "conv2d", "conv_transpose2d")


def candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules of user code (not ``torch.nn``'s own) whose parameters are a ``weight`` of 2 or 4 dims and an
    optional 1-D ``bias``: what a hand-written linear or convolution holds."""
    found = []
    for name, m in model.named_modules():
        if not name or not users_layer(m) or next(m.children(), None) is not None:
            continue
        params = dict(m.named_parameters(recurse=False))
        weight, bias = params.get("weight"), params.get("bias")
        if weight is None or set(params) - {"weight", "bias"} or weight.ndim not in (2, 4):
            continue
        if bias is not None and bias.ndim != 1:
            continue
        found.append((name, m))
    return found


def _settings(op: str, weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, Any]]:
    """The standard-layer settings of ``op`` whose output on ``x`` has ``y``'s shape (geometry only)."""
    if op == "linear":
        return [{}] if weight.ndim == 2 and x.shape[-1] == weight.shape[1] and y.shape[-1] == weight.shape[0] else []
    if weight.ndim != 4 or x.ndim != 4 or y.ndim != 4:
        return []
    k = weight.shape[2]
    found = []
    for stride in (1, 2, 4):
        for padding in range(k):
            if op == "conv2d" and x.shape[1] == weight.shape[1] and y.shape[1] == weight.shape[0]:
                size = (x.shape[2] + 2 * padding - k) // stride + 1
                if (size, (x.shape[3] + 2 * padding - weight.shape[3]) // stride + 1) == tuple(y.shape[2:]):
                    found.append({"stride": [stride, stride], "padding": [padding, padding]})
            if op == "conv_transpose2d" and x.shape[1] == weight.shape[0] and y.shape[1] == weight.shape[1]:
                for extra in range(stride):
                    size = (x.shape[2] - 1) * stride - 2 * padding + k + extra
                    if (size, (x.shape[3] - 1) * stride - 2 * padding + weight.shape[3] + extra) == tuple(y.shape[2:]):
                        found.append({"stride": [stride, stride], "padding": [padding, padding],
                                      "output_padding": [extra, extra]})
    return found


def _apply(op: str, x: torch.Tensor, weight: torch.Tensor, settings: dict[str, Any]) -> torch.Tensor:
    if op == "linear":
        return F.linear(x, weight)
    if op == "conv2d":
        return F.conv2d(x, weight, None, settings["stride"], settings["padding"])
    return F.conv_transpose2d(x, weight, None, settings["stride"], settings["padding"], settings["output_padding"])


@torch.no_grad()
def fit(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[str, dict[str, Any], float, torch.Tensor | None] | None:
    """(op, settings, scale, bias) of the standard layer that computes ``y = module(x)`` as ``op(x, scale * weight)
    + bias``, or None when none does (to :data:`TOLERANCE`). The bias (O,) is fitted too (a leaf may scale its
    own, as StyleGAN's learning-rate multiplier does); a leaf without a ``bias`` parameter must need none."""
    weight, has_bias = module.weight.detach().float(), getattr(module, "bias", None) is not None
    x, y = x.detach().float(), y.detach().float()
    for op in OPS:
        for settings in _settings(op, weight, x, y):
            base = _apply(op, x, weight, settings)
            channels = (lambda t: t.reshape(-1, t.shape[-1]).T) if op == "linear" else \
                (lambda t: t.transpose(0, 1).reshape(t.shape[1], -1))  # (O, everything else)
            b_rows, y_rows = channels(base), channels(y)
            if has_bias:  # centre per output channel: the scale is fitted on what the bias cannot explain
                b_c, y_c = b_rows - b_rows.mean(1, keepdim=True), y_rows - y_rows.mean(1, keepdim=True)
            else:
                b_c, y_c = b_rows, y_rows
            denom = float((b_c * b_c).sum())
            if denom == 0:
                continue
            scale = float((b_c * y_c).sum()) / denom
            bias = (y_rows - scale * b_rows).mean(1) if has_bias else None
            residual = y_rows - scale * b_rows - (0 if bias is None else bias[:, None])
            if float(residual.abs().max()) <= TOLERANCE * max(1.0, float(y.abs().max())):
                return op, settings, scale, bias
    return None


def _layer(op: str, weight_shape: tuple[int, ...], settings: dict[str, Any], bias: bool) -> nn.Module:
    """An empty standard layer for ``op`` whose weight has ``weight_shape``."""
    if op == "linear":
        return nn.Linear(weight_shape[1], weight_shape[0], bias=bias)
    k = tuple(weight_shape[2:])
    if op == "conv2d":
        return nn.Conv2d(weight_shape[1], weight_shape[0], k, tuple(settings["stride"]), tuple(settings["padding"]),
                         bias=bias)
    return nn.ConvTranspose2d(weight_shape[0], weight_shape[1], k, tuple(settings["stride"]),
                              tuple(settings["padding"]), tuple(settings["output_padding"]), bias=bias)


def _swap(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, layer)


@torch.no_grad()
def standardize(model: nn.Module, run: Callable[[nn.Module], Any]) -> dict[str, dict[str, Any]]:
    """Swap every :func:`candidates` leaf that :func:`fit` matches for its standard layer, in place, its scale
    folded into the weight; ``run(model)`` calls the model once on example inputs (eval mode). Returns the
    records of this call's swaps (also kept on ``model`` for :func:`standard_config`)."""
    found = candidates(model)
    if not found:
        return {}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if name not in seen and len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
                seen[name] = (args[0], output)
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in found]
    was_training = model.training
    try:
        run(model.eval())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    records: dict[str, dict[str, Any]] = {}
    for name, m in found:
        if name not in seen:
            continue
        match = fit(m, *seen[name])
        if match is None:
            continue
        op, settings, scale, bias = match
        layer = _layer(op, tuple(m.weight.shape), settings, bias is not None)
        layer.weight.copy_(m.weight.detach() * scale)
        if bias is not None:
            layer.bias.copy_(bias)
        layer.train(m.training)
        _swap(model, name, layer.to(m.weight.device))
        records[name] = {"op": op, **settings}
    if records:
        object.__setattr__(model, _ATTR, {**getattr(model, _ATTR, {}), **records})
    return records


def restore_standard(model: nn.Module, records: Any) -> nn.Module:
    """Load-time hook: swap ``model``'s (a fresh build's) recorded leaves for their standard layers, empty (the
    saved weights are loaded next). ``records``: the part config's ``standard_layers`` or None."""
    if not records:
        return model
    if not isinstance(records, dict):
        raise ModelFolderError(f"config.json: standard_layers must be a mapping, got {type(records).__name__}")
    for name, rec in records.items():
        op = rec.get("op") if isinstance(rec, dict) else None
        if op not in OPS:
            raise ModelFolderError(f"config.json: standard_layers[{name!r}] has op {op!r}; known: {', '.join(OPS)}")
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise ModelFolderError(f"config.json: standard_layers names {name!r}, which the model does not have "
                                   "(did its class change?)") from None
        weight = getattr(m, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ModelFolderError(f"config.json: standard_layers names {name!r}, which holds no weight")
        try:
            layer = _layer(op, tuple(weight.shape), rec, getattr(m, "bias", None) is not None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFolderError(f"config.json: standard_layers[{name!r}] is malformed ({exc})") from None
        _swap(model, name, layer)
    object.__setattr__(model, _ATTR, dict(records))
    return model


def standard_config(module: nn.Module) -> dict[str, Any]:
    """Save-time hook: ``{"standard_layers": records}`` for a part with swapped layers, else ``{}``."""
    records = getattr(module, _ATTR, None)
    return {"standard_layers": dict(records)} if records else {}

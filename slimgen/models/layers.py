"""Layers named by their place in the forward pass: ``<first>``, ``<second>`` and ``<last>``.

A recipe written for one generator names its layers (``net.0``, the DCGAN's latent layer), and another
generator calls the same layer ``fc`` or ``mapping.0``. The two layers recipes most often single out are
found by running the model once on example inputs:

- ``<first>``: the first Conv2d / ConvTranspose2d / Linear the inputs reach (a generator's latent layer);
- ``<second>``: the next one (the DCGAN's 7x7 -> 14x14 layer, which the frontier recipe factorizes);
- ``<last>``: the last one (the layer writing the image or logits).

A layer factorized by low-rank pruning (:class:`slimgen.models.factorized.LowRank`) counts as one
layer under its own name, so ``<first>.1`` names the 7x7 half of a DCGAN's factorized latent layer
(``net.0.1``). A selector may start a name and nothing else; the rest of the name is kept as written,
except where a recipe names a half of a factorized layer that this model left whole (a low-rank step
with ``required: false`` that did not pay, e.g. on a 16-wide latent): ``<first>.1`` (the half holding
the layer's weights) then names the layer itself, and ``<first>.0`` (the rank bottleneck, which exists
only in a factorized layer) names nothing and is left out (an error in ``layers``, where an empty list
means the default choice), with a warning either way. A name that
does not start with a selector is always taken as written.
Configs name layers in ``layers``, ``ignore``, ``layer_ratios`` and ``layer_bits``;
:func:`resolve_config` returns a config with the selectors there replaced by the layers' names.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.factorized import LAYERS, LowRank
from slimgen.models.inputs import GenInputs, call
from slimgen.models.mode import in_mode

SELECTORS = ("<first>", "<second>", "<last>")
NAMED_FIELDS = ("layers", "ignore", "layer_ratios", "layer_bits")

C = TypeVar("C")


def call_sequence(model: nn.Module, example: torch.Tensor | GenInputs, *, collapse: bool = True) -> list[str]:
    """Names of ``model``'s Conv / ConvTranspose / Linear layers, one per call, in the order one forward pass
    of ``example`` calls them (a layer called twice is there twice; one never called is not). ``collapse``:
    a :class:`LowRank` stands for its two halves (called once per call of the pair)."""
    names = {id(m): n for n, m in model.named_modules()}
    wrappers = [n for n, m in model.named_modules() if isinstance(m, LowRank)] if collapse else []
    order: list[str] = []

    def seen(module: nn.Module, *_: Any) -> None:
        name = names[id(module)]
        wrapper = next((w for w in wrappers if name.startswith(w + ".")), None)
        if wrapper is None:
            order.append(name)
        elif name == wrapper + ".0":  # a LowRank's first half (reduce) stands for the pair
            order.append(wrapper)

    handles = [m.register_forward_hook(seen) for m in model.modules() if isinstance(m, LAYERS)]
    try:
        with torch.no_grad(), in_mode(model, training=False):
            call(model, example)
    finally:
        for h in handles:
            h.remove()
    return order


def has_selector(name: str) -> bool:
    return name.startswith("<")


def resolve_name(name: str, order: list[str]) -> str:
    """``name`` with a leading selector replaced by the layer it picks from ``order`` (:func:`call_sequence`)."""
    if not has_selector(name):
        return name
    selector, closed, rest = name.partition(">")
    selector += closed
    if selector not in SELECTORS or (rest and not rest.startswith(".")):
        raise ConfigError(f"unknown layer selector in {name!r}: a name may start with {' or '.join(SELECTORS)} "
                          f"(e.g. <first>.1), or be a layer's own name")
    if not order:
        raise ConfigError(f"{name!r} picks a layer by its place in the forward pass, but no Conv/ConvTranspose/Linear "
                          "layer ran on the example inputs")
    if selector == "<second>" and len(order) < 2:
        raise ConfigError(f"{name!r} picks the second layer of the forward pass, but only {order[0]!r} ran")
    return (order[0] if selector == "<first>" else order[1] if selector == "<second>" else order[-1]) + rest


def _names(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def uses_selectors(config: object) -> bool:
    """Whether a dataclass config names a layer by a selector in one of :data:`NAMED_FIELDS`."""
    if not dataclasses.is_dataclass(config):
        return False
    return any(has_selector(n) for f in NAMED_FIELDS if hasattr(config, f) for n in _names(getattr(config, f)))


def resolve_config(config: C, model: nn.Module, example: torch.Tensor | GenInputs | None) -> C:
    """``config`` with every selector in its layer-naming fields replaced by a layer name of ``model`` (one
    forward pass of ``example``); the same object when it uses none."""
    if not uses_selectors(config):
        return config
    if example is None:
        raise ConfigError("<first> / <second> / <last> pick layers by running the model, which needs example inputs "
                          "(a model folder's input contract, or example_inputs)")
    order = call_sequence(model, example)
    modules = dict(model.named_modules())

    def resolve(name: str, field: str) -> str | None:
        resolved = resolve_name(name, order)
        if not has_selector(name):
            return resolved
        layer, dot, half = resolved.rpartition(".")
        if dot and half in ("0", "1") and resolved not in modules and isinstance(modules.get(layer), LAYERS):
            # a half of a factorization this model did not get: the layer itself holds the weights, no bottleneck
            if half == "1":
                warnings.warn(f"{name!r} names the weight half of a factorized layer, but {layer} was left whole: "
                              f"it names {layer}", stacklevel=3)
                return layer
            if field == "layers":  # an empty list would mean "the default choice"
                raise ConfigError(f"layers names {name!r}, the rank bottleneck of a factorized layer, but {layer} "
                                  "was left whole")
            warnings.warn(f"{name!r} names the rank bottleneck of a factorized layer, but {layer} was left whole: "
                          "left out", stacklevel=3)
            return None
        return resolved

    changed: dict[str, Any] = {}
    for f in NAMED_FIELDS:
        value = getattr(config, f, None)
        if not any(has_selector(n) for n in _names(value)):
            continue
        if isinstance(value, Mapping):
            kept = [(k, v) for k, v in ((resolve(str(k), f), v) for k, v in value.items()) if k is not None]
            changed[f] = dict(kept)
            if len(changed[f]) < len(kept):
                raise ConfigError(f"{f} names one layer twice ({', '.join(map(str, value))} -> "
                                  f"{', '.join(changed[f])}): give each layer once")
        else:
            resolved = [resolve(v, f) if isinstance(v, str) else v for v in value]
            changed[f] = type(value)(dict.fromkeys(r for r in resolved if r is not None))  # [net.0, <first>]: once
    return dataclasses.replace(config, **changed)  # type: ignore[type-var]

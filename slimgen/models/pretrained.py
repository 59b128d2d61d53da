"""A plain ``nn.Module`` and a model folder: the folder is the serialization of the module's state.

``save_pretrained(G, "out/")`` writes the generator with its input contract, storage encodings,
activation settings and step history (:mod:`slimgen.models.state`); ``load_pretrained("out/")``
rebuilds it with all of that attached again. ``bundle_of`` / ``module_of`` convert between a
module and the :class:`ModelBundle` that the folder-level verbs use.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.folder import ModelBundle, PartSpec, load_folder, save_folder
from slimgen.models.inputs import inputs_of, run
from slimgen.models.mode import in_mode
from slimgen.models.registry import architecture_name
from slimgen.models.state import state_of


@torch.no_grad()
def image_shape_of(generator: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of one image the generator produces for its own inputs (eval mode, one forward)."""
    with in_mode(generator):
        out = run(generator, inputs_of(generator).draw(2, seed=0))
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise ConfigError("the generator must return one tensor (B, C, H, W)")
    return tuple(int(s) for s in out.shape[1:])  # type: ignore[return-value]


def bundle_of(generator: nn.Module, *, discriminator: nn.Module | None = None,
              kwargs: dict[str, Any] | None = None) -> ModelBundle:
    """A GAN bundle around ``generator`` (not copied) built from the state it carries.

    ``kwargs``: its constructor kwargs when the state does not record them (a user's module
    built in Python: ``module:Class`` is rebuilt with them on load); default ``{}``.
    """
    if isinstance(generator, ModelBundle):
        raise TypeError("bundle_of takes an nn.Module; this is already a ModelBundle")
    state = state_of(generator)
    spec = PartSpec(state.arch or architecture_name(generator), dict(kwargs if kwargs is not None else state.kwargs or {}))
    parts, specs = {"generator": generator}, {"generator": spec}
    encodings = {f"generator.{k}": v for k, v in state.encodings.items()}
    if discriminator is not None:
        d_state = state_of(discriminator)
        parts["discriminator"] = discriminator
        specs["discriminator"] = PartSpec(d_state.arch or architecture_name(discriminator), dict(d_state.kwargs or {}))
        encodings.update({f"discriminator.{k}": v for k, v in d_state.encodings.items()})
    meta = {"activation_quant": dict(state.activation_quant)} if state.activation_quant else {}
    return ModelBundle(kind="gan", parts=parts, specs=specs, inputs=inputs_of(generator),
                       image_shape=image_shape_of(generator), steps=list(state.steps), encodings=encodings, meta=meta,
                       calibration=state.calibration)


def module_of(bundle: ModelBundle) -> nn.Module:
    """The bundle's generator with the bundle's record attached as its state (the module itself, not a copy)."""
    return bundle.sync_state().generator


def save_pretrained(generator: nn.Module, path: str | Path, *, kwargs: dict[str, Any] | None = None,
                    card: str | None = None) -> Path:
    """Write ``generator`` and its compression state as a model folder (see :func:`bundle_of` for ``kwargs``)."""
    return save_folder(bundle_of(generator, kwargs=kwargs), path, card=card)


def load_pretrained(path: str | Path) -> nn.Module:
    """The generator of the model folder ``path`` (or ``zoo:NAME``), its state attached, in eval mode."""
    return module_of(load_folder(path))


def detached_copy(module: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copies modules with torch.nn.utils.prune masks attached."""
    from torch.nn.utils import prune as torch_prune

    for m in module.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                setattr(m, hook._tensor_name, getattr(m, hook._tensor_name).detach())
    return copy.deepcopy(module)

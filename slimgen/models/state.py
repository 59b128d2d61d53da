"""Compression state on the module: what every verb reads and writes besides the weights.

A generator that went through slimgen carries, as attributes of the module itself (as torchao
keeps a quantized weight's state on the weight), everything a later verb needs to know:

- the input contract (:mod:`slimgen.models.inputs`, ``inputs_of`` / ``set_inputs``);
- ``encodings``: how each non-dense weight is stored (sparse masks, packed int8/int4,
  codebooks), keyed by the module's own state-dict names (``net.0.weight``);
- ``activation_quant``: the int8 activation settings (observer, percentile, calibration
  ``n`` and ``seed``) that the int8 ONNX export calibrates with; ``calibration``: the inputs
  themselves when ``quantize`` was given them (saved as ``calibration.safetensors``);
- ``steps``: the steps that produced it, whose ``rotate_latent`` entries are its latent frame;
- ``arch`` / ``kwargs``: how to rebuild it (registry name or ``module:Class`` + kwargs).

So a plain ``nn.Module`` goes prune -> distill -> quantize -> save -> load -> export without
losing anything between calls; a model folder is the serialization of this state
(:func:`bundle_of` / :func:`module_of`), and a :class:`ModelBundle` keeps its generator's state
in step (``ModelBundle`` pushes its fields onto the module when built).
The state survives ``copy.deepcopy`` (it lives in the module's ``__dict__``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from slimgen.models.frame import ROTATE_STEP
from slimgen.storage.codecs import Encoding

_ATTR = "_slimgen_state"


@dataclass
class CompressionState:
    """What slimgen knows about one module beyond its weights (see the module docstring)."""

    encodings: dict[str, Encoding] = field(default_factory=dict)
    activation_quant: dict[str, Any] | None = None
    calibration: Any = None  # GenInputs given to quantize (the int8 export calibrates on them), else None
    steps: list[dict[str, Any]] = field(default_factory=list)
    arch: str | None = None
    kwargs: dict[str, Any] | None = None

    @property
    def frame(self) -> tuple[str, ...]:
        """Fingerprints of the latent rotations folded into the module, oldest first."""
        return tuple(str(s.get("rotation")) for s in self.steps if s.get("step") == ROTATE_STEP)


def state_of(module: nn.Module) -> CompressionState:
    """The module's compression state (an empty one is attached on first use)."""
    state = module.__dict__.get(_ATTR)
    if state is None:
        state = CompressionState()
        object.__setattr__(module, _ATTR, state)
    return state


def has_state(module: nn.Module) -> bool:
    return module.__dict__.get(_ATTR) is not None


def set_state(module: nn.Module, state: CompressionState) -> nn.Module:
    """Attach (a copy of) ``state`` to ``module``; returns the module."""
    object.__setattr__(module, _ATTR, copy.deepcopy(state))
    return module


def record_step(module: nn.Module, step: dict[str, Any]) -> None:
    """Append a finished step (method + settings) to the module's history."""
    state = state_of(module)
    state.steps = [*state.steps, step]


def add_encodings(module: nn.Module, encodings: dict[str, Encoding]) -> None:
    """Record how weights of ``module`` (its state-dict names) are stored from now on."""
    state = state_of(module)
    state.encodings = {**state.encodings, **encodings}


def attach_folder_state(module: nn.Module, part: str, *, encodings: dict[str, Encoding], meta: dict[str, Any],
                        steps: list[dict[str, Any]], arch: str, kwargs: dict[str, Any], calibration: Any = None) -> None:
    """Put what a model folder says about part ``part`` onto ``module`` (the folder's keys are ``<part>.<name>``)."""
    prefix = f"{part}."
    aq = meta.get("activation_quant")
    set_state(module, CompressionState(
        encodings={k[len(prefix):]: v for k, v in encodings.items() if k.startswith(prefix)},
        activation_quant=dict(aq) if isinstance(aq, dict) and part == "generator" else None,
        calibration=calibration if part == "generator" else None,
        steps=list(steps), arch=arch, kwargs=dict(kwargs)))

"""Class-conditional models that take their labels one-hot.

slimgen's input contract draws labels as int64 indices ``y`` (B,) in [0, num_classes), and every verb, export and
runtime passes them so. Many conditional GANs are written for one-hot float vectors instead (``torch.cat([z, y], 1)``
with ``y`` (B, num_classes)); called with indices they fail. ``InputSpec.labels = "one_hot"`` records that a model
takes them so, and :func:`one_hot_labels` makes such a part (generator ``G(z, y)`` or discriminator ``D(x, y)``) a
subclass of the user's own class (same name, module, parameters and state-dict names) whose forward turns the
indices into one-hot vectors of the first input's dtype before the user's forward runs. A traced graph of it, its
ONNX and TorchScript exports include that step: everything outside the model keeps passing indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from slimgen.models.inputs import InputSpec

_MARK = "_slimgen_one_hot"  # the number of classes, on a class made by one_hot_labels


def one_hot_labels(module: nn.Module, num_classes: int) -> nn.Module:
    """``module`` (in place) with a forward ``(x, y) -> the user's forward(x, one_hot(y, num_classes))``; a module that
    already does so (its class is marked), or a graph traced from one (it holds the conversion), is returned as it is."""
    if getattr(module, _MARK, None) is not None or isinstance(module, fx.GraphModule):
        return module
    cls = type(module)

    def forward(self: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cls.forward(self, x, F.one_hot(y.long(), num_classes).to(x.dtype))

    module.__class__ = type(cls.__name__, (cls,), {"forward": forward, _MARK: num_classes,
                                                  "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return module


def index_labels(module: nn.Module) -> nn.Module:
    """Undo :func:`one_hot_labels` on ``module`` (in place): its own class back; any other module as it is."""
    if getattr(type(module), _MARK, None) is not None:
        module.__class__ = type(module).__mro__[1]
    return module


def labels_as(module: nn.Module, spec: InputSpec) -> nn.Module:
    """``module`` (in place) taking the contract's index labels the way ``spec`` says its forward wants them: converting
    them to one-hot vectors for ``labels: one_hot``, as they are otherwise (undoing an earlier conversion)."""
    if spec.labels == "one_hot":
        return one_hot_labels(module, int(spec.num_classes))  # type: ignore[arg-type]
    return index_labels(module)

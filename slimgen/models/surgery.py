"""Resize layers in place to given weight shapes: how a pruned model is rebuilt from its config."""

from __future__ import annotations

import torch
from torch import nn

from slimgen.errors import ModelFolderError

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _set_attrs_from_weight(module: nn.Module, shape: list[int]) -> None:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):  # weight (in, out / groups, *k)
        module.in_channels, module.out_channels = shape[0], shape[1] * module.groups
    elif isinstance(module, nn.modules.conv._ConvNd):  # weight (out, in / groups, *k)
        module.out_channels, module.in_channels = shape[0], shape[1] * module.groups
    elif isinstance(module, nn.Linear):  # weight (out, in)
        module.out_features, module.in_features = shape[0], shape[1]
    elif isinstance(module, _NORMS):
        module.num_features = shape[0]
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = shape[0]
    elif isinstance(module, nn.Embedding):  # weight (num_embeddings, embedding_dim)
        module.num_embeddings, module.embedding_dim = shape[0], shape[1]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(shape)
    else:
        raise ModelFolderError(
            f"cannot resize a {type(module).__name__}: slimgen can rebuild pruned Conv/ConvTranspose/Linear/"
            "BatchNorm/InstanceNorm/GroupNorm/LayerNorm/Embedding layers only"
        )


def resize_to(model: nn.Module, shapes: dict[str, list[int]]) -> None:
    """Replace parameters and buffers named in ``shapes`` by empty ones of that shape.

    Layer attributes (``out_channels``, ``num_features``, ...) follow the weight's shape so the
    module runs and exports as a genuinely smaller layer.
    """
    for name, shape in shapes.items():
        mod_name, _, attr = name.rpartition(".")
        module = model.get_submodule(mod_name) if mod_name else model
        old = getattr(module, attr, None)
        if not isinstance(old, torch.Tensor):
            raise ModelFolderError(f"config.json lists a shape for {name!r}, which the model does not have")
        new = torch.empty(shape, dtype=old.dtype)
        if isinstance(old, nn.Parameter):
            setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            module.register_buffer(attr, new)
        if attr == "weight":
            _set_attrs_from_weight(module, list(shape))

"""Resize layers in place to given weight shapes: how a pruned model is rebuilt from its config."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimgen.errors import ModelFolderError


def users_layer(module: nn.Module) -> bool:
    """A module of the model's own classes (not one of torch's)."""
    return not type(module).__module__.startswith("torch.")


def conv_weight_of(module: nn.Module, name: str = "weight") -> tuple[nn.Parameter, int] | None:
    """A user's layer's own conv-shaped parameter ``name`` (1, ..., C_out, C_in, kh, kw) and its C_out dimension (C_in
    is the next one): a StyleGAN2 modulated conv's weight, which its forward scales per sample; None otherwise."""
    w = module._parameters.get(name)
    if w is None or not users_layer(module) or w.ndim < 4 or any(s != 1 for s in w.shape[:-4]):
        return None
    return w, w.ndim - 4


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _set_attrs_from_weight(module: nn.Module, shape: list[int]) -> None:
    depthwise = isinstance(module, nn.modules.conv._ConvNd) and 1 < module.groups == module.in_channels
    if isinstance(module, nn.modules.conv._ConvNd) and len(shape) > 2:  # a cropped kernel (kernel pruning)
        module.kernel_size = tuple(shape[2:])
    if isinstance(module, nn.modules.conv._ConvTransposeNd):  # weight (in, out / groups, *k)
        if depthwise:  # one group per input channel: pruning removes whole groups
            module.groups = shape[0]
        module.in_channels, module.out_channels = shape[0], shape[1] * module.groups
    elif isinstance(module, nn.modules.conv._ConvNd):  # weight (out, in / groups, *k)
        if depthwise:  # out = multiplier * groups, one input channel per group
            module.groups = shape[0] // (module.out_channels // module.groups)
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
    elif isinstance(module, nn.PReLU):  # weight (num_parameters,)
        module.num_parameters = shape[0]
    elif users_layer(module):
        return  # the user's own layer (a StyleGAN2 modulated conv): its forward reads its widths off its tensors
    else:
        raise ModelFolderError(
            f"cannot resize a {type(module).__name__}: slimgen can rebuild pruned Conv/ConvTranspose/Linear/"
            "BatchNorm/InstanceNorm/GroupNorm/LayerNorm/PReLU/Embedding layers (and layers of the model's own classes) only"
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


GEOMETRY = ("padding", "output_padding")  # a convolution's; an instance norm without tensors records num_features


def _stateless_norm(m: nn.Module | None) -> bool:
    """An instance norm without affine parameters or running statistics: its width is an attribute only."""
    return isinstance(m, nn.modules.instancenorm._InstanceNorm) and not list(m.parameters()) and not list(m.buffers())


def _stateless_layernorm(m: nn.Module | None) -> bool:
    """A LayerNorm without weight or bias: channel pruning changes its ``normalized_shape``, which no tensor holds."""
    return isinstance(m, nn.LayerNorm) and not list(m.parameters())


def geometry_overrides(module: nn.Module, fresh: nn.Module) -> dict[str, dict[str, Any]]:
    """What no tensor shape records, against ``fresh`` (the same architecture built anew), ``{layer: {attr: value}}``:
    convolutions whose padding / output padding differ (what a cropped kernel changed, :mod:`slimgen.prune.kernel`),
    instance norms without weights or statistics whose ``num_features`` differs and LayerNorms without weights whose
    ``normalized_shape`` differs (what channel pruning changed)."""
    built = dict(fresh.named_modules())
    out: dict[str, dict[str, Any]] = {}
    for name, m in module.named_modules():
        ref = built.get(name)
        if type(ref) is not type(m):
            continue
        if isinstance(m, nn.modules.conv._ConvNd):
            changed: dict[str, Any] = {a: list(getattr(m, a)) for a in GEOMETRY if not isinstance(getattr(m, a), str)
                                       and tuple(getattr(m, a)) != tuple(getattr(ref, a))}
        elif _stateless_norm(m) and m.num_features != ref.num_features:
            changed = {"num_features": m.num_features}
        elif _stateless_layernorm(m) and tuple(m.normalized_shape) != tuple(ref.normalized_shape):
            changed = {"normalized_shape": list(m.normalized_shape)}
        else:
            continue
        if changed:
            out[name] = changed
    return out


def restore_geometry(model: nn.Module, records: Any) -> None:
    """Set what :func:`geometry_overrides` recorded (config.json ``geometry``)."""
    if not records:
        return
    if not isinstance(records, dict):
        raise ModelFolderError(f"config.json: geometry must be a mapping, got {type(records).__name__}")
    modules = dict(model.named_modules())
    for name, attrs in records.items():
        m = modules.get(name)
        if _stateless_layernorm(m):
            shape = attrs.get("normalized_shape") if isinstance(attrs, dict) and set(attrs) == {"normalized_shape"} else None
            if (not isinstance(shape, list) or len(shape) != len(m.normalized_shape)
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
                raise ModelFolderError(f"config.json: geometry[{name!r}] must map normalized_shape to "
                                       f"{len(m.normalized_shape)} integers >= 1")
            m.normalized_shape = tuple(shape)
            continue
        if _stateless_norm(m):
            width = attrs.get("num_features") if isinstance(attrs, dict) and set(attrs) == {"num_features"} else None
            if not isinstance(width, int) or isinstance(width, bool) or width < 1:
                raise ModelFolderError(f"config.json: geometry[{name!r}] must map num_features to an integer >= 1")
            m.num_features = width
            continue
        if not isinstance(m, nn.modules.conv._ConvNd):
            raise ModelFolderError(f"config.json: geometry names {name!r}, which is no convolution (or instance norm "
                                   "or LayerNorm without weights) of the model")
        if not isinstance(attrs, dict) or not set(attrs) <= set(GEOMETRY):
            raise ModelFolderError(f"config.json: geometry[{name!r}] must map {' / '.join(GEOMETRY)} to sizes")
        for attr, sizes in attrs.items():
            dims = len(m.kernel_size)
            if (not isinstance(sizes, list) or len(sizes) != dims
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes)):
                raise ModelFolderError(f"config.json: geometry[{name!r}].{attr} must be {dims} integers >= 0")
            setattr(m, attr, tuple(sizes))


def reparametrized(module: nn.Module) -> list[str]:
    """Names of the tensors ``module`` computes from other parameters each call: ``torch.nn.utils.parametrize``
    parametrizations (``parametrizations.spectral_norm`` / ``weight_norm``) and the older hook-based
    ``spectral_norm`` / ``weight_norm`` (``weight_orig`` / ``weight_g`` + ``weight_v``)."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    names = []
    for mod_name, m in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if parametrize.is_parametrized(m):
            names += [prefix + t for t in m.parametrizations]
        names += [prefix + h.name for h in m._forward_pre_hooks.values() if isinstance(h, SpectralNorm | WeightNorm)]
    return names


def bake_parametrizations(module: nn.Module) -> list[str]:
    """Replace every computed weight of ``module`` (see :func:`reparametrized`) by its current value, in place.

    Pruning, quantization and export need plain layers; a compressed model is for inference, where
    a spectral-normalized weight is the fixed tensor ``W / sigma``. Run in eval mode, so spectral
    normalization does no power iteration and the baked model computes what the original computed
    in eval mode. Later training (fine-tuning, distillation) updates the plain weight without the
    constraint. Returns the names baked.
    """
    from torch.nn.utils import parametrize, remove_spectral_norm, remove_weight_norm
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    baked = reparametrized(module)
    if not baked:
        return baked
    was_training = module.training
    module.eval()
    try:
        for m in list(module.modules()):
            if parametrize.is_parametrized(m):
                for tensor_name in list(m.parametrizations):
                    parametrize.remove_parametrizations(m, tensor_name, leave_parametrized=True)
            for hook in list(m._forward_pre_hooks.values()):
                if isinstance(hook, SpectralNorm):
                    remove_spectral_norm(m, hook.name)
                    _drop_spectral_norm_state_hooks(m)
                elif isinstance(hook, WeightNorm):
                    remove_weight_norm(m, hook.name)
    finally:
        module.train(was_training)
    return baked


def bake_to_match(module: nn.Module, keys: set[str]) -> nn.Module:
    """Bake ``module``'s parametrizations when the tensor names ``keys`` (of a state saved or held elsewhere)
    are those of the baked layers; ``module`` is a fresh build of an architecture. Returns ``module``."""
    if reparametrized(module) and set(module.state_dict()) != keys:
        bake_parametrizations(module)
    return module


def _drop_spectral_norm_state_hooks(module: nn.Module) -> None:
    """``remove_spectral_norm`` leaves its load-state hook when torch wraps it (``_WrappedHook``); that hook
    would rename a plain ``weight`` to ``weight_orig`` on every later load, so drop it here."""
    from torch.nn.utils.spectral_norm import SpectralNormLoadStateDictPreHook, SpectralNormStateDictHook

    for hooks in (module._load_state_dict_pre_hooks, module._state_dict_hooks):
        for key, hook in list(hooks.items()):
            inner = getattr(hook, "hook", hook)
            if isinstance(inner, SpectralNormLoadStateDictPreHook | SpectralNormStateDictHook):
                del hooks[key]

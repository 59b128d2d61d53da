"""Kernel pruning: crop the spatial kernel of Conv2d / ConvTranspose2d layers, output shapes unchanged.

Channel pruning narrows a layer; this shortens its kernel. A DCGAN's stride-2 4x4 transposed
convolution reads 4 input taps per output pixel; cropped to its central 2x2 it reads one (a
sub-pixel layer without overlap) at a quarter of the MACs, so the same budget holds a layer twice
as wide in both channel dimensions (bench/results/kernel.md). The kept taps are the window of
largest weight energy among the windows that keep every output pixel where it was:

- ConvTranspose (output ``o = s*i + k - p``): taps ``[a, a + k')`` go with padding ``p - a`` and
  output padding ``op + k - k' - 2a``, which must lie in ``[0, s)``; dilation 1 and ``k' >= s`` (fewer
  taps than the stride would leave output pixels that no input reaches).
- Conv (input ``i = s*o + k - p``): a centred crop only (``k - k'`` even), padding ``p - (k - k')/2``.

Which layers: those named in ``layers``, else every 2-D convolution whose kernel is larger than
``size`` and that can be cropped that way, except the layer writing the output (image or logits). The cropped geometry
is what a model folder records (``shapes`` and :func:`slimgen.models.surgery.geometry_overrides`).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.inputs import GenInputs, call
from slimgen.models.layers import call_sequence
from slimgen.models.mode import in_mode
from slimgen.prune.calibration import PruneContext
from slimgen.prune.configs import KernelPruning

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def crop_plan(conv: nn.Module, size: int) -> tuple[list[int], list[int], list[int]] | str:
    """Per spatial dim: (offsets, paddings, output paddings) of the crop to ``size``, or why there is none."""
    if not isinstance(conv, _CONVS):
        return f"is a {type(conv).__name__}, not a Conv2d or ConvTranspose2d"
    if isinstance(conv.padding, str):
        return f"has padding={conv.padding!r}; give it as numbers"
    if any(d != 1 for d in conv.dilation):
        return f"is dilated ({tuple(conv.dilation)})"
    transposed = isinstance(conv, nn.ConvTranspose2d)
    weight = conv.weight.detach()
    offsets, pads, opads = [], [], []
    for dim in range(2):
        k, p, s = conv.kernel_size[dim], conv.padding[dim], conv.stride[dim]
        if k <= size:
            offsets.append(0), pads.append(p), opads.append(conv.output_padding[dim] if transposed else 0)
            continue
        if transposed and size < s:
            return f"is a transposed convolution of stride {s}: fewer taps than that leave output pixels without input"
        energy = weight.pow(2).sum(dim=[d for d in range(weight.dim()) if d != 2 + dim])  # (k,)
        best: tuple[float, int, int, int] | None = None
        for a in range(k - size + 1):
            if transposed:
                new_p, new_op = p - a, conv.output_padding[dim] + k - size - 2 * a
                ok = new_p >= 0 and 0 <= new_op < s
            else:
                new_p, new_op = p - a, 0
                ok = new_p >= 0 and 2 * a == k - size
            if ok:
                kept = float(energy[a:a + size].sum())
                if best is None or kept > best[0]:
                    best = (kept, a, new_p, new_op)
        if best is None:
            kind = "transposed " if transposed else ""
            return (f"is a {kind}convolution with kernel {k}, stride {s}, padding {p}: no {size}-tap window keeps "
                    "its output size and pixel positions")
        offsets.append(best[1]), pads.append(best[2]), opads.append(best[3])
    return offsets, pads, opads


def crop(conv: nn.Module, size: int) -> None:
    """Crop ``conv``'s kernel to at most ``size`` taps per spatial dim in place (raises ConfigError if it cannot)."""
    plan = crop_plan(conv, size)
    if isinstance(plan, str):
        raise ConfigError(f"cannot crop this layer's kernel to {size}: it {plan}")
    (a0, a1), pads, opads = plan
    k0, k1 = min(size, conv.kernel_size[0]), min(size, conv.kernel_size[1])
    with torch.no_grad():
        conv.weight = nn.Parameter(conv.weight[:, :, a0:a0 + k0, a1:a1 + k1].clone(),
                                   requires_grad=conv.weight.requires_grad)
    conv.kernel_size, conv.padding = (k0, k1), tuple(pads)
    if isinstance(conv, nn.ConvTranspose2d):
        conv.output_padding = tuple(opads)


def _output_shape(model: nn.Module, example: torch.Tensor | GenInputs) -> tuple[int, ...]:
    with torch.no_grad(), in_mode(model, training=False):
        return tuple(call(model, example).shape)


def output_layer(model: nn.Module, example: torch.Tensor | GenInputs) -> str | None:
    """The layer writing the output: the last Conv / ConvTranspose / Linear one forward pass calls."""
    order = call_sequence(model, example, collapse=False)
    return order[-1] if order else None


def targets(model: nn.Module, config: KernelPruning, example: torch.Tensor | GenInputs) -> tuple[list[str], dict[str, str]]:
    """The layers to crop, and the layers left as they are with the reason (the default choice only)."""
    modules = dict(model.named_modules())
    if config.layers:
        for name in config.layers:
            if name not in modules:
                near = [n for n, m in modules.items() if isinstance(m, _CONVS)]
                raise ConfigError(f"layers names {name!r}, which the model does not have; its convolutions: "
                                  f"{', '.join(near) or 'none'}")
            plan = crop_plan(modules[name], config.size)
            if isinstance(plan, str):
                raise ConfigError(f"cannot crop the kernel of {name!r} to {config.size}: it {plan}")
            if max(modules[name].kernel_size) <= config.size:
                raise ConfigError(f"layer {name!r} has kernel {tuple(modules[name].kernel_size)}, already at most "
                                  f"{config.size}: nothing to crop")
        return list(config.layers), {}
    output = output_layer(model, example)
    chosen, left = [], {}
    for name, m in modules.items():
        if not isinstance(m, _CONVS) or max(m.kernel_size) <= config.size:
            continue
        if name == output:
            left[name] = "writes the model's output (image or logits; name it in layers to crop it too)"
            continue
        plan = crop_plan(m, config.size)
        if isinstance(plan, str):
            left[name] = plan
        else:
            chosen.append(name)
    return chosen, left


def prune_kernels(model: nn.Module, config: KernelPruning, ctx: PruneContext) -> nn.Module:
    """Crop the kernels of :func:`targets` in place; returns the model. The layers cropped and those left whole
    (with why) go into ``ctx.notes`` (the step's ``cropped_layers`` and ``kept_layers``)."""
    example = ctx.need_example_inputs("kernel pruning")
    before = _output_shape(model, example)
    chosen, left = targets(model, config, example)
    if not chosen:
        why = "; ".join(f"{n}: {r}" for n, r in left.items()) or "no Conv2d/ConvTranspose2d layer has a larger kernel"
        if config.required:
            raise ConfigError(f"kernel pruning to {config.size} found no layer to crop ({why})")
        warnings.warn(f"kernel pruning to {config.size} found no layer to crop, so the step changed nothing ({why})",
                      stacklevel=2)
        ctx.notes.update(cropped_layers=[], kept_layers=left)
        return model
    modules = dict(model.named_modules())
    cropped = []
    for name in chosen:  # one at a time: the plan keeps sizes by construction, a forward that reads sizes may not
        why = _crop_checked(model, modules[name], config.size, example, before)
        if why is None:
            cropped.append(name)
        elif config.layers:
            raise ConfigError(f"cannot crop the kernel of {name!r} to {config.size}: {why}")
        else:
            left[name] = why
            warnings.warn(f"kernel pruning left {name} whole: {why}", stacklevel=2)
    if not cropped:
        if config.required:
            raise ConfigError(f"kernel pruning to {config.size} found no layer to crop "
                              f"({'; '.join(f'{n}: {r}' for n, r in left.items())})")
        warnings.warn(f"kernel pruning to {config.size} cropped no layer, so the step changed nothing", stacklevel=2)
    ctx.notes.update(cropped_layers=cropped, kept_layers=left)
    return model


def _crop_checked(model: nn.Module, conv: nn.Module, size: int, example: torch.Tensor | GenInputs,
                  before: tuple[int, ...]) -> str | None:
    """Crop ``conv`` in place; where the model then fails or changes its output shape (a forward that asks a
    transposed convolution for a fixed ``output_size``, or reads ``kernel_size``), put it back and say why."""
    saved = (conv.weight, conv.kernel_size, conv.padding, getattr(conv, "output_padding", None))
    crop(conv, size)
    try:
        after = _output_shape(model, example)
        why = None if after == before else f"cropped, the model's output changed from {before} to {after}"
    except Exception as exc:  # the user's forward: any failure means this layer stays whole
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        why = f"cropped, the model's forward fails ({type(exc).__name__}: {first[:160]})"
    if why is not None:
        conv.weight, conv.kernel_size, conv.padding = saved[:3]
        if saved[3] is not None:
            conv.output_padding = saved[3]
    return why

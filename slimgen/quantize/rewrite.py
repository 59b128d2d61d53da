"""Exact rewrite of ConvTranspose2d layers into layers with real int8 kernels in ONNX Runtime.

ONNX Runtime has no int8 ConvTranspose kernel (a QDQ ConvTranspose runs dequantize + float),
but int8 Conv2d and MatMul are real (QLinearConv, QLinearMatMul). So before int8 export:

- a strided ConvTranspose2d(k, s, p) becomes (zero padding) + Conv2d(in, out * s^2, K') +
  PixelShuffle(s) (sub-pixel convolution): output phase r of each axis uses the taps
  ``ky = (r + p) mod s + s * t`` at input offsets ``floor((r + p) / s) - t``; one Conv2d
  holds every phase, with zero taps where a phase uses none. For k=4, s=2, p=1: K'=3, pad 1.
- a ConvTranspose2d whose input is 1x1 (the DCGAN first layer on (B, nz, 1, 1)) with p=0 is a
  matrix product: Flatten + Linear(in, out * k * k) + Unflatten to (B, out, k, k).

Both are exact up to float summation order.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.factorized import LowRank
from slimgen.models.inputs import GenInputs, call


class Rewritten(nn.Sequential):
    """The layers replacing one ConvTranspose2d. Output channel c of the block is rows
    ``c * repeat .. c * repeat + repeat - 1`` of ``core``'s output (Conv2d or Linear)."""

    def __init__(self, core: nn.Conv2d | nn.Linear, repeat: int, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.repeat = repeat

    @property
    def core(self) -> nn.Conv2d | nn.Linear:
        return next(m for m in self if isinstance(m, nn.Conv2d | nn.Linear))


def _single(v: tuple[int, ...] | int, what: str, layer: str) -> int:
    vals = (v,) if isinstance(v, int) else tuple(v)
    if len(set(vals)) != 1:
        raise ConfigError(f"{layer}: cannot rewrite a ConvTranspose2d with a non-square {what} {vals}")
    return vals[0]


def _phase_taps(k: int, s: int, p: int) -> list[list[tuple[int, int]]]:
    """Per output phase r in [0, s): [(kernel tap ky, input offset d)] with out[s*Y + r] += x[Y + d] * W[ky]."""
    phases = []
    for r in range(s):
        first, base = (r + p) % s, (r + p) // s
        phases.append([(first + s * t, base - t) for t in range((k - first + s - 1) // s) if first + s * t < k])
    return phases


def subpixel_conv(layer: nn.ConvTranspose2d, name: str = "ConvTranspose2d", *, per_phase: bool = True) -> Rewritten:
    """ConvTranspose2d (B, Cin, H, W) -> (B, Cout, s*H + e, s*W + e) as [pad] + Conv2d + PixelShuffle(s).

    Requires groups=1, dilation 1, square kernel/stride/padding and an output size that is a
    multiple of s (``k - s - 2p + output_padding`` divisible by s, true for k=4, s=2, p=1).
    """
    if layer.groups != 1 or set(layer.dilation) != {1}:
        raise ConfigError(f"{name}: cannot rewrite a grouped or dilated ConvTranspose2d")
    k, s = _single(layer.kernel_size, "kernel", name), _single(layer.stride, "stride", name)
    p, op = _single(layer.padding, "padding", name), _single(layer.output_padding, "output_padding", name)
    extra = k - s - 2 * p + op
    if extra % s:
        raise ConfigError(f"{name}: ConvTranspose2d(k={k}, s={s}, p={p}) output size is not a multiple of the "
                          f"stride, so it is not a PixelShuffle of a convolution; supported: (k - s - 2p) % s == 0")
    phases = _phase_taps(k, s, p)
    if per_phase and _shifted_phases(phases, s):
        return _shifted_subpixel_conv(layer, phases, extra // s)
    offsets = [d for taps in phases for _, d in taps]
    dmin, dmax = min(offsets), max(offsets)
    kk = dmax - dmin + 1
    pad_l, pad_r = -dmin, extra // s + kk - 1 + dmin
    if pad_l < 0 or pad_r < 0:
        raise ConfigError(f"{name}: ConvTranspose2d(k={k}, s={s}, p={p}) needs cropping, not padding; not supported")
    cin, cout = layer.in_channels, layer.out_channels
    w = layer.weight.detach()  # (Cin, Cout, k, k)
    conv_w = torch.zeros(cout, s, s, cin, kk, kk, dtype=w.dtype)  # PixelShuffle order: c * s^2 + ry * s + rx
    for ry, ytaps in enumerate(phases):
        for rx, xtaps in enumerate(phases):
            for ky, dy in ytaps:
                for kx, dx in xtaps:
                    conv_w[:, ry, rx, :, dy - dmin, dx - dmin] = w[:, :, ky, kx].T
    same = pad_l == pad_r
    conv = nn.Conv2d(cin, cout * s * s, kk, padding=pad_l if same else 0, bias=layer.bias is not None, dtype=w.dtype)
    with torch.no_grad():
        conv.weight.copy_(conv_w.reshape(cout * s * s, cin, kk, kk))
        if layer.bias is not None:
            conv.bias.copy_(layer.bias.detach().repeat_interleave(s * s))
    pad: list[nn.Module] = [] if same else [nn.ZeroPad2d((pad_l, pad_r, pad_l, pad_r))]
    return Rewritten(conv, s * s, *pad, conv, nn.PixelShuffle(s))


class Crop2d(nn.Module):
    """(B, C, H, W) -> (B, C, H - 2m, W - 2m): drop ``m`` pixels on every side."""

    def __init__(self, margin: int) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.margin
        return x[:, :, m:-m, m:-m] if m else x  # constant bounds: a single ONNX Slice


def _shifted_phases(phases: list[list[tuple[int, int]]], s: int) -> bool:
    """True for stride 2 when both phases use T taps and phase 1's window starts one input later
    (k=4, s=2, p=1): then one TxT conv serves both phases and a 1-pixel crop aligns them."""
    if s != 2 or len(phases[0]) != len(phases[1]) or not phases[0]:
        return False
    starts = [min(d for _, d in taps) for taps in phases]
    return starts[1] == starts[0] + 1 and starts[0] <= 0


def _shifted_subpixel_conv(layer: nn.ConvTranspose2d, phases: list[list[tuple[int, int]]], extra: int) -> Rewritten:
    """Per-phase TxT kernels (no zero taps): pad P = -start_0 before and T - P after (+ extra),
    Conv2d(in, out * 4, T) -> (B, out * 4, L + 1, L + 1), PixelShuffle(2) with phases in reverse order
    (q = 1 - r), crop one pixel per side. out[2Y + r] = O_r[Y + r] = D2S(O)[2Y + r + 1]."""
    taps, start = len(phases[0]), min(d for _, d in phases[0])
    pad_l, pad_r = -start, taps + start + extra  # conv output length = L + 1 with L = H + extra
    cin, cout = layer.in_channels, layer.out_channels
    w = layer.weight.detach()  # (Cin, Cout, k, k)
    conv_w = torch.zeros(cout, 2, 2, cin, taps, taps, dtype=w.dtype)  # (c, q_y, q_x): q = 1 - r
    for ry, ytaps in enumerate(phases):
        for rx, xtaps in enumerate(phases):
            for ky, dy in ytaps:
                for kx, dx in xtaps:
                    conv_w[:, 1 - ry, 1 - rx, :, dy - start - ry, dx - start - rx] = w[:, :, ky, kx].T
    same = pad_l == pad_r
    conv = nn.Conv2d(cin, cout * 4, taps, padding=pad_l if same else 0, bias=layer.bias is not None, dtype=w.dtype)
    with torch.no_grad():
        conv.weight.copy_(conv_w.reshape(cout * 4, cin, taps, taps))
        if layer.bias is not None:
            conv.bias.copy_(layer.bias.detach().repeat_interleave(4))
    pad: list[nn.Module] = [] if same else [nn.ZeroPad2d((pad_l, pad_r, pad_l, pad_r))]
    return Rewritten(conv, 4, *pad, conv, nn.PixelShuffle(2), Crop2d(1))


def matmul_from_1x1(layer: nn.ConvTranspose2d, name: str = "ConvTranspose2d") -> Rewritten:
    """ConvTranspose2d on a (B, Cin, 1, 1) input with padding 0 -> Flatten + Linear + Unflatten (B, Cout, kh, kw)."""
    if layer.groups != 1 or set(layer.padding) != {0} or set(layer.output_padding) != {0} or set(layer.dilation) != {1}:
        raise ConfigError(f"{name}: a 1x1-input ConvTranspose2d is a matmul only with groups=1, padding 0, dilation 1")
    kh, kw = layer.kernel_size
    cin, cout = layer.in_channels, layer.out_channels
    lin = nn.Linear(cin, cout * kh * kw, bias=layer.bias is not None, dtype=layer.weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(layer.weight.detach().permute(1, 2, 3, 0).reshape(cout * kh * kw, cin))  # row: c*kh*kw + y*kw + x
        if layer.bias is not None:
            lin.bias.copy_(layer.bias.detach().repeat_interleave(kh * kw))
    return Rewritten(lin, kh * kw, nn.Flatten(1), lin, nn.Unflatten(1, (cout, kh, kw)))


def _input_sizes(model: nn.Module, example_input: torch.Tensor | GenInputs
                 ) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """Spatial size (H, W) of the input of every ConvTranspose2d on ``example_input``, and the names of those whose
    output is not the size their own attributes give (called with ``output_size=``: the call, not the module,
    fixes the padding, so a rewrite from the attributes would compute another size)."""
    sizes: dict[str, tuple[int, int]] = {}
    sized_by_call: set[str] = set()

    def seen(m: nn.ConvTranspose2d, args: tuple, out: torch.Tensor, n: str) -> None:
        sizes[n] = tuple(args[0].shape[-2:])
        own = [(i - 1) * st - 2 * p + d * (k - 1) + op + 1 for i, st, p, d, k, op in zip(
            sizes[n], m.stride, m.padding, m.dilation, m.kernel_size, m.output_padding, strict=True)]
        if list(out.shape[-2:]) != own:
            sized_by_call.add(n)

    hooks = [m.register_forward_hook(lambda m, args, out, n=n: seen(m, args, out, n))
             for n, m in model.named_modules() if isinstance(m, nn.ConvTranspose2d)]
    try:
        with torch.no_grad():
            call(model.eval(), example_input)
    finally:
        for h in hooks:
            h.remove()
    return sizes, sized_by_call


def rewrite_conv_transpose(model: nn.Module, example_input: torch.Tensor | GenInputs, *, per_phase: bool = True,
                           keep: tuple[str, ...] = ()) -> nn.Module:
    """A copy of ``model`` (eval mode) with every ConvTranspose2d replaced by its exact equivalent.

    ``example_input``: one input batch, used to find which layers see a 1x1 input (those become
    a Linear; the others a sub-pixel Conv2d). ``per_phase``: for k=4, s=2, p=1 (and other stride-2
    layers whose two phases' windows are one input apart) use 2x2 per-phase kernels + a crop
    instead of a 3x3 kernel with zero taps (2.25x fewer MACs). ``keep``: module names left as
    they are (a layer that stays fp32 gains nothing from the rewrite; for the DCGAN's image output
    layer ONNX Runtime's fp32 ConvTranspose was faster than Conv2d + DepthToSpace + Slice, which
    took 30% of the exported model's time at batch 64). A layer with no such equivalent (k=3, s=2,
    p=1 without output_padding, dilated, grouped) or called with ``output_size=`` stays a
    ConvTranspose2d, with one warning (in an int8 graph ONNX Runtime runs it dequantized, in float).
    """
    model = copy.deepcopy(model).eval()
    for m in model.modules():  # an in-place ReLU on a cropped view exports as ScatterND copies
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    sizes, sized_by_call = _input_sizes(model, example_input)
    left: list[str] = []
    for name, size in sizes.items():
        if name in keep:
            continue
        layer, label = model.get_submodule(name), name or "ConvTranspose2d"
        if name in sized_by_call:
            left.append(f"{label} (called with output_size)")
            continue
        one_by_one = size == (1, 1) and set(layer.padding) == {0} and set(layer.output_padding) == {0}
        try:
            new = matmul_from_1x1(layer, label) if one_by_one else subpixel_conv(layer, label, per_phase=per_phase)
        except ConfigError as exc:
            left.append(f"{label}: {str(exc).removeprefix(f'{label}: ')}")
            continue
        if not name:
            return new
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
    if left:
        warnings.warn(f"kept as ConvTranspose2d (in an int8 graph ONNX Runtime runs it dequantized, in float): "
                      f"{'; '.join(left)}", stacklevel=2)
    return model


def _fold_into(core: nn.Conv2d | nn.Linear, bn: nn.BatchNorm2d, repeat: int) -> None:
    """core rows r (output channel r // repeat) absorb eval-mode ``bn``: w * a, b * a + (beta - mean * a)."""
    a = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * a
    a_rows, shift_rows = a.repeat_interleave(repeat), shift.repeat_interleave(repeat)
    bias = core.bias.detach() if core.bias is not None else torch.zeros(core.weight.shape[0])
    with torch.no_grad():
        core.weight.mul_(a_rows.view(-1, *[1] * (core.weight.ndim - 1)))
        core.bias = nn.Parameter(bias * a_rows + shift_rows)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d or a :class:`Rewritten` block
    (in the same nn.Sequential; for a factorized :class:`~slimgen.models.factorized.LowRank` layer, its
    last half) into that layer, in place; the BatchNorm becomes nn.Identity.

    Exact up to float rounding; returns ``model``. Needed so int8 Conv runs end to end in ONNX Runtime.
    """
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            prev, bn = seq[i], seq[i + 1]
            if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
                continue
            if isinstance(prev, LowRank):
                prev = prev[-1]
            if isinstance(prev, Rewritten):
                _fold_into(prev.core, bn, prev.repeat)
            elif isinstance(prev, nn.Conv2d) and prev.groups == 1:
                _fold_into(prev, bn, 1)
            else:
                continue
            seq[i + 1] = nn.Identity()
    return model


# |x| beyond which the activation's output is within 2.3e-7 of its limit, so clamping there is exact
_SATURATION = {nn.Tanh: 8.0, nn.Sigmoid: 16.0}


def clamp_before_saturation(model: nn.Module) -> nn.Module:
    """Clamp the output of a Conv2d / Linear / :class:`Rewritten` block that feeds a Tanh (at +-8)
    or Sigmoid (at +-16), in place; returns ``model``. Outputs change by at most 2.3e-7.

    A generator's last layer can reach -100 where the image saturates; calibrated over that
    range, an int8 activation grid is too coarse where the Tanh is steep. The clamp (an ONNX
    Clip, which ONNX Runtime folds into the Conv's output range) keeps the grid where it matters.
    """
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            prev, act = seq[i], seq[i + 1]
            limit = _SATURATION.get(type(act))
            if limit is None:
                continue
            if isinstance(prev, Rewritten):
                layers = list(prev)
                at = next(j for j, m in enumerate(layers) if m is prev.core) + 1
                seq[i] = Rewritten(prev.core, prev.repeat, *layers[:at], nn.Hardtanh(-limit, limit), *layers[at:])
            elif isinstance(prev, nn.Conv2d | nn.Linear):
                seq[i] = nn.Sequential(prev, nn.Hardtanh(-limit, limit))
    return model


_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.SiLU, nn.GELU)


def activations_before_shuffle(model: nn.Module) -> nn.Module:
    """Move an elementwise activation that follows a :class:`Rewritten` block (past folded-BatchNorm
    Identities) inside it, right after its core layer, in place; returns ``model``.

    Exact: an elementwise function commutes with PixelShuffle, padding-free crops and reshapes.
    It lets a runtime fuse the activation into the convolution (OpenVINO ran Tanh as a separate
    pass over the 64x64 image after DepthToSpace and Slice: about 20% of the tutorial-shaped
    generator's int8 time) and leaves DepthToSpace to move already activated values.
    """
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            block = seq[i]
            if not isinstance(block, Rewritten) or any(isinstance(m, nn.ZeroPad2d) for m in block):
                continue
            j = i + 1
            while j < len(seq) and isinstance(seq[j], nn.Identity):
                j += 1
            if j == len(seq) or not isinstance(seq[j], _ELEMENTWISE):
                continue
            layers = list(block)
            at = max(k for k, m in enumerate(layers) if m is block.core or isinstance(m, nn.Hardtanh)) + 1
            act = seq[j]
            if isinstance(act, nn.ReLU | nn.LeakyReLU | nn.Hardtanh):
                act.inplace = False
            seq[i] = Rewritten(block.core, block.repeat, *layers[:at], act, *layers[at:])
            seq[j] = nn.Identity()
    return model


def prepare_for_int8(model: nn.Module, example_input: torch.Tensor | GenInputs, *, keep: tuple[str, ...] = ()) -> nn.Module:
    """A copy of ``model`` whose layers all have int8 kernels in ONNX Runtime, with the same
    outputs to float tolerance: ConvTranspose2d rewritten (but the modules in ``keep``, which
    stay fp32), BatchNorm folded, pre-Tanh clamp."""
    return clamp_before_saturation(fold_batchnorm(rewrite_conv_transpose(model, example_input, keep=keep)))

"""Pure tensor maths of uniform quantization: scales, zero points, quantize and dequantize.

A weight ``w`` (any shape) with channel axis ``axis`` (or per tensor when ``axis is None``)
maps to integers ``q = clamp(round(w / scale) + zero_point, qmin, qmax)`` and back to
``(q - zero_point) * scale``.

Scales are float32 (``scale_type="float"``) or powers of two (``"pow2"``): fixed point,
``scale = 2^-p`` with an integer exponent ``p`` (the fractional bits), so ``q = round(w * 2^p)``
and a dequantize or requantize is a shift. A power-of-two scale is the float scale rounded up
to the next power of two (the range the float scale covers stays covered): at most 2x coarser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MSE_GRID = 40  # clipping ratios tried by the MSE search, evenly spaced in [0.3, 1]
SCALE_TYPES = ("float", "pow2")


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer codes plus the affine parameters to decode them.

    ``q``: int32, the shape of the weight. ``scale``: float32 and ``zero_point``: int32, shape
    (C,) for per-channel along ``axis`` or () per tensor.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    symmetric: bool
    axis: int | None

    @property
    def exponent(self) -> torch.Tensor | None:
        """int32 ``p`` with ``scale == 2^-p`` (shape of ``scale``) when every scale is a power of two, else None."""
        return pow2_exponent(self.scale)

    @property
    def qmin(self) -> int:
        return qrange(self.bits, self.symmetric)[0]

    def dequantize(self) -> torch.Tensor:
        """-> float32 tensor of the weight's shape."""
        scale, zp = _broadcast(self.scale, self.q, self.axis), _broadcast(self.zero_point, self.q, self.axis)
        return ((self.q - zp).float() * scale).float()


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range: symmetric [-(2^(b-1)-1), 2^(b-1)-1] (restricted, zero exact), else [0, 2^b - 1]."""
    if symmetric:
        m = 2 ** (bits - 1) - 1
        return -m, m
    return 0, 2**bits - 1


def pow2_exponent(scale: torch.Tensor) -> torch.Tensor | None:
    """int32 ``p`` with ``scale == 2^-p`` exactly (same shape), or None when some scale is not a power of two."""
    mantissa, exp = torch.frexp(scale.float())
    if not bool((mantissa == 0.5).all()):
        return None
    return (1 - exp).to(torch.int32)


def pow2_scale(exponent: torch.Tensor) -> torch.Tensor:
    """float32 ``2^-p`` for integer exponents ``p`` (any shape), exact."""
    return torch.ldexp(torch.ones(exponent.shape), -exponent.to(torch.int32)).float()


def round_up_pow2(scale: torch.Tensor) -> torch.Tensor:
    """Positive float scales (any shape) -> the smallest powers of two >= them (float32, exact)."""
    mantissa, exp = torch.frexp(scale.float())  # scale = m * 2^e, m in [0.5, 1)
    return torch.ldexp(torch.ones_like(mantissa), torch.where(mantissa == 0.5, exp - 1, exp)).float()


def _broadcast(v: torch.Tensor, like: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Per-channel (C,) -> shape broadcastable against ``like`` along ``axis``; scalars unchanged."""
    if axis is None or v.ndim == 0:
        return v
    shape = [1] * like.ndim
    shape[axis] = -1
    return v.view(shape)


def _channels_first(w: torch.Tensor, axis: int | None) -> torch.Tensor:
    """(…) -> (C, N) rows per channel, or (1, numel) per tensor."""
    if axis is None:
        return w.reshape(1, -1)
    return w.movedim(axis, 0).reshape(w.shape[axis], -1)


def _params_from_range(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool, scale_type: str = "float"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipping range (C,) each -> (scale float32 (C,), zero point int32 (C,)); the range always holds 0.

    ``scale_type="pow2"``: each scale rounded up to a power of two (an all-zero channel gets 1 = 2^0)."""
    if scale_type not in SCALE_TYPES:
        raise ValueError(f"scale_type must be one of {SCALE_TYPES}, got {scale_type!r}")
    qmin, qmax = qrange(bits, symmetric)
    lo, hi = (lo, hi) if symmetric else (torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0))
    scale = torch.maximum(lo.abs(), hi.abs()) / qmax if symmetric else (hi - lo) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
    if scale_type == "pow2":
        scale = round_up_pow2(scale)
    zp = torch.zeros_like(scale, dtype=torch.int32)
    if not symmetric:
        zp = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax).to(torch.int32)
    return scale, zp


def _fake_quant_rows(rows: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """(C, N) rows with per-row scale/zp (C,) -> dequantized (C, N)."""
    qmin, qmax = qrange(bits, symmetric)
    q = torch.clamp(torch.round(rows / scale[:, None]) + zp[:, None], qmin, qmax)
    return (q - zp[:, None]) * scale[:, None]


def _range_minmax(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rows.min(dim=1).values, rows.max(dim=1).values


def _range_percentile(rows: torch.Tensor, pct: float) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.tensor([1.0 - pct / 100.0, pct / 100.0], dtype=rows.dtype)
    lo, hi = torch.quantile(rows, q, dim=1)
    return lo, hi


def _range_mse(rows: torch.Tensor, bits: int, symmetric: bool, scale_type: str = "float"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, shrink the min/max range by the ratio in [0.3, 1] with the least squared error
    (on the grid ``scale_type`` makes of it)."""
    lo, hi = _range_minmax(rows)
    best_err = torch.full_like(lo, float("inf"))
    best_lo, best_hi = lo.clone(), hi.clone()
    for ratio in torch.linspace(0.3, 1.0, MSE_GRID):
        scale, zp = _params_from_range(lo * ratio, hi * ratio, bits, symmetric, scale_type)
        err = (_fake_quant_rows(rows, scale, zp, bits, symmetric) - rows).pow(2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo, best_hi = torch.where(better, lo * ratio, best_lo), torch.where(better, hi * ratio, best_hi)
    return best_lo, best_hi


def clipping_range(w: torch.Tensor, bits: int, symmetric: bool, axis: int | None, scale_method: str = "minmax",
                   percentile: float = 99.99, scale_type: str = "float") -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi), each (C,) per channel or (1,) per tensor: the range the grid must cover."""
    rows = _channels_first(w.detach().float(), axis)
    if scale_method == "minmax":
        return _range_minmax(rows)
    if scale_method == "percentile":
        return _range_percentile(rows, percentile)
    if scale_method == "mse":
        return _range_mse(rows, bits, symmetric, scale_type)
    raise ValueError(f"scale_method must be minmax, percentile or mse, got {scale_method!r}")


def quantize_linear(w: torch.Tensor, bits: int, symmetric: bool, per_channel: bool, scale_method: str = "minmax", *,
                    axis: int = 0, percentile: float = 99.99, scale_type: str = "float") -> QuantizedTensor:
    """Quantize ``w`` (any shape; channels along ``axis`` when ``per_channel``) to ``bits``-bit integers.

    Every element inside the clipping range is within half a step (``scale / 2``) of its
    dequantized value; elements outside are clamped to the nearest end of the grid.
    ``scale_type="pow2"``: every scale is a power of two (:attr:`QuantizedTensor.exponent`).
    """
    ax = axis % w.ndim if per_channel and w.ndim > 0 else None
    lo, hi = clipping_range(w, bits, symmetric, ax, scale_method, percentile, scale_type)
    scale, zp = _params_from_range(lo, hi, bits, symmetric, scale_type)
    if ax is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    qmin, qmax = qrange(bits, symmetric)
    s, z = _broadcast(scale, w, ax), _broadcast(zp, w, ax)
    q = torch.clamp(torch.round(w.detach().float() / s) + z, qmin, qmax).to(torch.int32)
    return QuantizedTensor(q, scale, zp, bits, symmetric, ax)


def requantize(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int, symmetric: bool,
               axis: int | None) -> QuantizedTensor:
    """Codes of ``w`` on a given grid (scale/zero point (C,) or ()), e.g. to store already-quantized weights."""
    qmin, qmax = qrange(bits, symmetric)
    s, z = _broadcast(scale, w, axis), _broadcast(zero_point, w, axis)
    q = torch.clamp(torch.round(w.detach().float() / s) + z, qmin, qmax).to(torch.int32)
    return QuantizedTensor(q, scale.float(), zero_point.to(torch.int32), bits, symmetric, axis)


def naive_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The tutorial formula, kept as a baseline: ``round(w / delta) * delta + min``, ``delta = (max - min) / 2^bits``."""
    lo, hi = w.min(), w.max()
    delta = (hi - lo) / 2**bits
    if delta == 0:
        return w.clone()
    return torch.round(w / delta) * delta + lo

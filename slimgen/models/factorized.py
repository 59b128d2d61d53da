"""A layer factorized into two of lower rank, and how a model folder records it.

A Conv2d / ConvTranspose2d / Linear weight read as a matrix over one channel side is often close to
low rank: a DCGAN's latent layer (64 latent channels -> c x 7 x 7) keeps ~97% of its weight energy at
rank 32 of 64. :class:`LowRank` computes such a layer as two standard layers:

- ``side="input"``: a 1x1 map of the ``in`` channels to ``rank`` (``reduce``: Conv2d 1x1 / Linear, no
  bias), then the layer itself from ``rank`` channels (``expand``: the same kind, kernel, stride,
  padding and bias). The matrix is the weight over (in) x (out * kernel).
- ``side="output"``: the layer itself to ``rank`` channels (no bias), then a 1x1 map to ``out``
  (with the bias). The matrix is the weight over (out) x (in * kernel).

Both are exact at full rank (a channel map commutes with zero / reflect padding, striding and
transposition); below it, the truncated SVD gives the closest pair (Eckart-Young). Weights and MACs
drop when ``rank * (in + out * k) < in * out * k`` (input side). Both halves are ordinary layers,
so channel pruning, kernel cropping, quantization and export treat them as any other.

**How it is stored.** The part's config records ``"factorized": {name: {"rank": r, "side": s}}``;
loading builds the class, replaces each named layer by an empty :class:`LowRank` of that rank
(:func:`restore_factorized`), then resizes and loads the saved weights as for any pruned model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimgen.errors import ConfigError, ModelFolderError

LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
SIDES = ("input", "output")


class LowRank(nn.Sequential):
    """``reduce`` then ``expand`` (children 0 and 1): one layer factorized at ``rank`` on ``side``."""

    def __init__(self, reduce: nn.Module, expand: nn.Module, side: str) -> None:
        super().__init__(reduce, expand)
        self.side = side

    @property
    def rank(self) -> int:
        return _width(self[0], out=True)

    def forward(self, x: torch.Tensor, output_size: Any = None) -> torch.Tensor:
        """As the layer it replaces: a transposed convolution called with ``output_size`` (U-Net/pix2pix decoders
        do) passes it to the half that holds its kernel and stride (the 1x1 half keeps its input's size)."""
        if output_size is None:
            return self[1](self[0](x))
        if self.side == "input":
            return self[1](self[0](x), output_size=output_size)
        return self[1](self[0](x, output_size=output_size))


def _width(layer: nn.Module, *, out: bool) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features if out else layer.in_features
    return layer.out_channels if out else layer.in_channels


def why_not(layer: nn.Module) -> str | None:
    """Why ``layer`` cannot be factorized, or None."""
    if isinstance(layer, LowRank):
        return "is already factorized"
    if not isinstance(layer, LAYERS):
        return f"is a {type(layer).__name__}, not a Conv2d, ConvTranspose2d or Linear"
    if not isinstance(layer, nn.Linear) and layer.groups != 1:
        return f"is a grouped convolution (groups={layer.groups})"
    return None


def matrix(layer: nn.Module, side: str) -> torch.Tensor:
    """The weight of ``layer`` as the (channels of ``side``) x (everything else) matrix that is factorized."""
    w = layer.weight.detach()
    transposed = isinstance(layer, nn.ConvTranspose2d)  # weight (in, out, k, k); Conv2d / Linear: (out, in, ...)
    rows_first = transposed if side == "input" else not transposed  # the side's channels are dim 0 already
    return (w if rows_first else w.transpose(0, 1)).reshape(w.shape[0 if rows_first else 1], -1)


def _conv_like(layer: nn.Module, in_ch: int, out_ch: int, bias: bool) -> nn.Module:
    """A layer of ``layer``'s kind and geometry with other channel counts."""
    if isinstance(layer, nn.Linear):
        return nn.Linear(in_ch, out_ch, bias=bias)
    kw = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation, "bias": bias,
          "padding_mode": layer.padding_mode}
    if isinstance(layer, nn.ConvTranspose2d):
        return nn.ConvTranspose2d(in_ch, out_ch, layer.kernel_size, output_padding=layer.output_padding, **kw)
    return nn.Conv2d(in_ch, out_ch, layer.kernel_size, **kw)


def _pointwise(layer: nn.Module, in_ch: int, out_ch: int, bias: bool) -> nn.Module:
    return nn.Linear(in_ch, out_ch, bias=bias) if isinstance(layer, nn.Linear) else nn.Conv2d(in_ch, out_ch, 1, bias=bias)


def empty_lowrank(layer: nn.Module, rank: int, side: str) -> LowRank:
    """The :class:`LowRank` shape of ``layer`` at ``rank`` (weights uninitialised: a load fills them)."""
    why = why_not(layer)
    if why is not None:
        raise ConfigError(f"cannot factorize this layer: it {why}")
    if side not in SIDES:
        raise ConfigError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    n_in, n_out, bias = _width(layer, out=False), _width(layer, out=True), layer.bias is not None
    if side == "input":
        return LowRank(_pointwise(layer, n_in, rank, False), _conv_like(layer, rank, n_out, bias), side)
    return LowRank(_conv_like(layer, n_in, rank, False), _pointwise(layer, rank, n_out, bias), side)


def factorize(layer: nn.Module, rank: int, side: str) -> tuple[LowRank, float]:
    """``layer`` as a :class:`LowRank` of ``rank`` (truncated SVD) and the fraction of weight energy it keeps."""
    out = empty_lowrank(layer, rank, side)
    m = matrix(layer, side).double()
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    if not 1 <= rank <= len(s):
        raise ConfigError(f"rank must be in 1..{len(s)} for this layer (its {side} side has {len(s)} channels), got {rank}")
    root = s[:rank].sqrt()
    side_factor, rest = u[:, :rank] * root, root[:, None] * vh[:rank]  # (channels, r), (r, rest)
    w = layer.weight
    with torch.no_grad():
        small, big = (out[0], out[1]) if side == "input" else (out[1], out[0])
        # the 1x1 half holds the channel-side factor, the other half the rest (reshaped to the layer's kind)
        pw = side_factor.T if side == "input" else side_factor  # input: (r, in); output: (out, r)
        small.weight.copy_(pw.reshape(small.weight.shape).to(w.dtype))
        if isinstance(layer, nn.ConvTranspose2d):
            big_w = rest.reshape(rank, *w.shape[1:]) if side == "input" else \
                rest.reshape(rank, w.shape[0], *w.shape[2:]).transpose(0, 1)
        elif isinstance(layer, nn.Conv2d):
            big_w = rest.reshape(rank, w.shape[0], *w.shape[2:]).transpose(0, 1) if side == "input" else \
                rest.reshape(rank, *w.shape[1:])
        else:
            big_w = rest.T if side == "input" else rest
        big.weight.copy_(big_w.to(w.dtype))
        if layer.bias is not None:
            out[1].bias.copy_(layer.bias)
    kept = float((s[:rank] ** 2).sum() / (s ** 2).sum().clamp_min(1e-30))
    out.train(layer.training)
    return out, kept


def weights_at(layer: nn.Module, rank: int, side: str) -> int:
    """Weight count of ``layer`` factorized at ``rank`` on ``side`` (biases aside)."""
    m = matrix(layer, side)
    return rank * (m.shape[0] + m.shape[1])


def records(module: nn.Module) -> dict[str, dict[str, Any]]:
    """``{name: {"rank", "side"}}`` of every :class:`LowRank` in ``module``."""
    return {n: {"rank": m.rank, "side": m.side} for n, m in module.named_modules() if isinstance(m, LowRank)}


def restore_factorized(module: nn.Module, recorded: Any) -> nn.Module:
    """Load-time hook: replace each recorded layer of ``module`` (a fresh build) by an empty :class:`LowRank`."""
    if not recorded:
        return module
    if not isinstance(recorded, dict):
        raise ModelFolderError(f"config.json: factorized must be a mapping, got {type(recorded).__name__}")
    for name, rec in recorded.items():
        rank, side = (rec.get("rank"), rec.get("side")) if isinstance(rec, dict) else (None, None)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1 or side not in SIDES:
            raise ModelFolderError(f"config.json: factorized[{name!r}] must be {{rank: integer >= 1, side: "
                                   f"{' | '.join(SIDES)}}}, got {rec!r}")
        try:
            layer = module.get_submodule(name)
        except AttributeError:
            raise ModelFolderError(f"config.json: factorized names {name!r}, which the model does not have") from None
        try:
            module.set_submodule(name, empty_lowrank(layer, rank, side))
        except ConfigError as exc:
            raise ModelFolderError(f"config.json: factorized[{name!r}]: {exc}") from None
    return module

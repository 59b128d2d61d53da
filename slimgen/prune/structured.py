"""Structured (channel) pruning through torch-pruning's dependency graph.

torch-pruning groups every coupled dimension (ConvTranspose2d in/out, norms, residual adds,
concatenations) and removes whole channels. It does not follow a Linear whose output is
reshaped into channels (``Linear -> view(B, C, s, s) -> Conv``); :mod:`slimgen.prune.reshape`
prunes those couplings itself, in groups of s*s output features per channel.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.inputs import GenInputs, call, tracer_inputs
from slimgen.prune.calibration import PruneContext, accumulate_gradients, input_activity
from slimgen.prune.configs import ChannelPruning
from slimgen.prune.reshape import ReshapeCoupling, coupling_scores, find_reshape_couplings, prune_coupling

_SUPPORTED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.PReLU)
_ROOTS = (nn.modules.conv._ConvNd, nn.Linear)


def check_supported(model: nn.Module, ignore: tuple[str, ...]) -> None:
    """Every layer holding parameters must be one torch-pruning can resize and slimgen can rebuild."""
    for name, m in model.named_modules():
        if name in ignore or not list(m.parameters(recurse=False)):
            continue
        if not isinstance(m, _SUPPORTED):
            raise ConfigError(
                f"ChannelPruning cannot prune layer {name!r} of type {type(m).__name__}: supported layers are "
                "Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear, BatchNorm, InstanceNorm, GroupNorm and PReLU "
                "(list it in ignore=(...) to keep its channels)"
            )
        if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < m.in_channels:
            raise ConfigError(f"ChannelPruning cannot prune grouped convolution {name!r} (groups={m.groups})")


@torch.no_grad()
def output_layers(model: nn.Module, example_inputs: torch.Tensor | GenInputs) -> list[nn.Module]:
    """The last Conv/ConvTranspose/Linear layer to run: it produces the image (or logit) and keeps its channels."""
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, a, o: order.append(mod)) for m in model.modules()
               if isinstance(m, _ROOTS)]
    try:
        call(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return order[-1:]


def _check_ratio(model: nn.Module, ratio: float, ignored: list[nn.Module], couplings: list[ReshapeCoupling]) -> None:
    """A uniform ratio must leave every layer at least one channel (torch-pruning keeps int(C * (1 - ratio)))."""
    sizes = {n: _out_channels(m) for n, m in model.named_modules() if isinstance(m, _ROOTS) and m not in ignored}
    names = {id(m): n for n, m in model.named_modules()}
    sizes.update({names[id(c.linear)]: c.channels for c in couplings})
    for name, channels in sizes.items():
        if int(channels * (1 - ratio)) < 1:
            raise ConfigError(
                f"ratio {ratio} would remove every channel of layer {name!r} ({channels} channels, "
                f"int({channels} * (1 - {ratio})) = 0 kept); use a ratio below {1 - 1 / channels:.4g}"
            )


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


class _ActivationImportance(tp.importance.GroupMagnitudeImportance):
    """Mean |feature map| of a channel, read at the inputs of the layers that consume it."""

    def __init__(self, activity: dict[nn.Module, torch.Tensor]) -> None:
        super().__init__(p=1, group_reduction="mean", normalizer="mean")
        self.activity = activity

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        imps, idx_lists = [], []
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if dep.handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels) and layer in self.activity:
                imps.append(self.activity[layer][sorted(idxs)])
                idx_lists.append(group[i].root_idxs)
        if not imps:
            return None
        return self._normalize(self._reduce(imps, idx_lists), self.normalizer)


class _WithFallback(tp.importance.Importance):
    """``primary``'s score, or ``fallback``'s for groups the primary cannot score (e.g. no BatchNorm)."""

    def __init__(self, primary: tp.importance.Importance, fallback: tp.importance.Importance) -> None:
        self.primary, self.fallback = primary, fallback

    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        imp = self.primary(group)
        return imp if imp is not None else self.fallback(group)


def make_importance(model: nn.Module, config: ChannelPruning, ctx: PruneContext) -> tuple[
        tp.importance.Importance, dict[nn.Module, torch.Tensor]]:
    """The torch-pruning importance for ``config.importance``; gradients/activations are computed here.

    Also returns the per-layer input activity (empty unless ``importance="activation"``).
    """
    l1 = tp.importance.MagnitudeImportance(p=1)
    if config.importance == "l1":
        return l1, {}
    if config.importance == "l2":
        return tp.importance.MagnitudeImportance(p=2), {}
    if config.importance == "bn_scale":
        return _WithFallback(tp.importance.BNScaleImportance(), l1), {}
    if config.importance == "activation":
        act = input_activity(model, ctx, batch_size=config.batch_size, method="activation importance")
        return _WithFallback(_ActivationImportance(act), l1), act
    accumulate_gradients(model, ctx, loss=config.loss, batch_size=config.batch_size, method="taylor importance")
    return _WithFallback(tp.importance.TaylorImportance(), l1), {}


def _named(model: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ConfigError(f"ignore names {missing[0]!r}, which is not a layer of {type(model).__name__}")
    return [modules[n] for n in names]


def prune_channels(model: nn.Module, config: ChannelPruning, ctx: PruneContext) -> nn.Module:
    """Remove channels in place (torch-pruning, then the Linear -> reshape couplings); returns ``model``."""
    # label embeddings (class-conditional generators) are part of the input contract: they keep their width
    embeddings = tuple(n for n, m in model.named_modules() if isinstance(m, nn.Embedding))
    check_supported(model, config.ignore + embeddings)
    example = ctx.need_example_inputs("ChannelPruning")
    was_training = model.training
    model.eval()
    ignored = output_layers(model, example) + _named(model, config.ignore + embeddings)
    couplings = [c for c in find_reshape_couplings(model, example) if c.linear not in ignored]
    if config.scope == "uniform":
        _check_ratio(model, config.ratio, ignored, couplings)
    importance, activity = make_importance(model, config, ctx)
    scores = [coupling_scores(c, config.importance, activity) for c in couplings]
    pruner = tp.pruner.MetaPruner(
        model, tracer_inputs(example), importance=importance, pruning_ratio=config.ratio,
        global_pruning=config.scope == "global", max_pruning_ratio=config.max_layer_ratio,
        ignored_layers=ignored + [c.linear for c in couplings],
    )
    try:
        pruner.step()
    except (IndexError, RuntimeError) as exc:
        raise ConfigError(
            f"torch-pruning could not group this model's channels ({type(exc).__name__}: {exc}); "
            "list the layers around the failing coupling in ChannelPruning(ignore=(...))"
        ) from exc
    for c, s in zip(couplings, scores, strict=True):
        prune_coupling(c, s, config.ratio)
    model.zero_grad(set_to_none=True)
    _check_runs(model, example)
    model.train(was_training)
    return model


@torch.no_grad()
def _check_runs(model: nn.Module, example: torch.Tensor | GenInputs) -> None:
    try:
        call(model, example)
    except RuntimeError as exc:
        raise ConfigError(
            f"after channel pruning the model no longer runs ({exc}); does its forward() hard-code a channel "
            "count (e.g. view(B, 64, 7, 7))? write view(B, -1, s, s) or list that layer in ignore=(...)"
        ) from exc

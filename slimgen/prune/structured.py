"""Structured (channel) pruning through torch-pruning's dependency graph, on the user's code as written.

torch-pruning groups every coupled dimension (ConvTranspose2d in/out, BatchNorm/InstanceNorm,
GroupNorm with its groups kept equal, residual adds, skip concatenations, Upsample,
SiLU/LeakyReLU, conditional norms' per-class embeddings) and removes whole channels. It does
not follow a Linear whose output is reshaped into channels (``Linear -> view(B, C, s, s) ->
Conv``); :mod:`slimgen.prune.reshape` prunes those couplings itself, in groups of s*s output
features per channel. A forward that reshapes with literal widths is first captured as its
width-agnostic graph (:mod:`slimgen.models.graph`).

Layers that keep their output channels (:func:`kept_layers`, recorded in the step): the
output layer; layers feeding a PixelShuffle (r*r sub-pixel blocks); self-attention q/k/v
projections (head dimensions, see :func:`attention_projections`); layers named in ``ignore``.
A model whose forward still fails after pruning (a submodule slimgen could not trace that
hard-codes a width) raises ``ConfigError`` naming the fix (``ignore``).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from slimgen.errors import ConfigError
from slimgen.models.graph import quiet_graph, sync_width_attributes, width_agnostic
from slimgen.models.inputs import GenInputs
from slimgen.models.mode import in_mode
from slimgen.models.standard import standardize
from slimgen.models.surgery import bake_parametrizations
from slimgen.prune.calibration import PruneContext, accumulate_gradients, input_activity, resolve_importance
from slimgen.prune.chunked import (
    Shuffled,
    chunked_producers,
    lent,
    lent_magnitude,
    prune_source,
    shuffled_producers,
    source_parameters,
)
from slimgen.prune.configs import ChannelPruning
from slimgen.prune.gated import Gated, gated_units, glu_modules, lent_units
from slimgen.prune.layernorm import KINDS as LAYERNORMS
from slimgen.prune.layernorm import channel_dims, lent_layernorms
from slimgen.prune.modulated import Modulated, ModulatedCore, lent_modulated, modulated_modules, modulated_units
from slimgen.prune.own import OwnLayer, lent_own, own_modules, own_units
from slimgen.prune.reshape import (
    SHUFFLES,
    ReshapeCoupling,
    coupling_scores,
    dependency_graph,
    find_reshape_couplings,
    prune_coupling,
    traced_forward,
)

_SUPPORTED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.PReLU, nn.Embedding,
              *LAYERNORMS.values())  # a LayerNorm whose channel dimension one forward pass found (lent_layernorms)
Example = torch.Tensor | tuple[torch.Tensor, ...]  # one batch of a model's positional inputs
_ROOTS = (nn.modules.conv._ConvNd, nn.Linear)


def check_supported(model: nn.Module, ignore: tuple[str, ...], types: Mapping[str, str] | None = None,
                    why: Mapping[str, str] | None = None) -> list[tuple[nn.Parameter, int]]:
    """Every layer holding parameters must be one torch-pruning can resize and slimgen can rebuild.

    Returns the free parameters shaped (1, C, ...) (a learned constant input (1, C, 4, 4) as in
    StyleGAN, a per-channel bias or noise strength (1, C, 1, 1)) with their channel dimension 1, and
    those shaped (C,) (the bias of a weight-scaled convolution in ProGAN-style code, added as
    ``bias.view(1, C, 1, 1)``) with dimension 0, for torch-pruning to prune with the layers they are
    tied to (it would guess the last dimension). ``types``: layer name -> class name to report (the user's
    classes, where ``model`` is their traced graph, whose traced-through submodules are plain Modules). ``why``:
    layer name -> why it has no channels to prune (a LayerNorm over (H, W): :func:`channel_dims`), said in the refusal.
    """
    free: list[tuple[nn.Parameter, int]] = []
    refused: list[tuple[str, str]] = []  # (layer name, class): all named in one error, not one per run
    for name, m in model.named_modules():
        own = [(n, p) for n, p in m.named_parameters(recurse=False) if p.numel() > 1]  # scalars (SAGAN's gamma)
        if name in ignore or not own:
            continue
        if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < m.in_channels:
            raise ConfigError(f"ChannelPruning cannot prune grouped convolution {name!r} (groups={m.groups})")
        if isinstance(m, _SUPPORTED):
            continue
        other = [n for n, p in own if not (p.ndim >= 3 and p.shape[0] == 1) and p.ndim != 1]
        if other and not name:
            raise ConfigError(f"ChannelPruning cannot prune the model's own parameter {other[0]!r}: supported layers "
                              f"are {_SUPPORTED_TEXT}")
        if other:
            refused.append((name, (types or {}).get(name, type(m).__name__)))
            continue
        free += [(p, 0 if p.ndim == 1 else 1) for _, p in own]
    if refused:
        (name, kind), more = refused[0], refused[1:]
        reason = f", {why[name]}" if why and name in why else ""
        others = f" (and {len(more)} more: {', '.join(repr(n) for n, _ in more)})" if more else ""
        what = f"layer {name!r} of type {kind}{reason}{others}"
        flags = " ".join(f"--ignore {n}" for n, _ in refused)
        raise ConfigError(f"ChannelPruning cannot prune {what}: supported layers are {_SUPPORTED_TEXT} (list "
                          f"{'them' if more else 'it'} in ignore=(...) to keep {'their' if more else 'its'} channels: "
                          f"{flags})")
    return free


_SUPPORTED_TEXT = ("Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear, BatchNorm, InstanceNorm, GroupNorm, LayerNorm over "
                   "(C, ...) or tokens' (C,), PReLU and "
                   "Embedding, StyleGAN2 modulated convs, layers of your own class holding one 2-D or conv-shaped "
                   "weight whose channels act one by one (an equalized linear with its activation fused), and free "
                   "parameters shaped (1, C, ...) or (C,)")


@torch.no_grad()
def output_layers(model: nn.Module, example_inputs: Example | GenInputs, graph: tp.DependencyGraph) -> list[nn.Module]:
    """The layers that write the image (or logit) and keep their channels: the last Conv/ConvTranspose/Linear to run,
    and every layer whose output channels torch-pruning ties to it (the other toRGB layers of a generator that sums
    one per scale, as MSG-GAN and StyleGAN2's skip generator do)."""
    last = _last_layer(model, example_inputs)
    return last + [tied for m in last for tied in _out_coupled(graph, m) if isinstance(tied, _ROOTS)]


def _last_layer(model: nn.Module, example_inputs: Example | GenInputs) -> list[nn.Module]:
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, a, o: order.append(mod)) for m in model.modules()
               if isinstance(m, (*_ROOTS, OwnLayer))]
    try:
        model(*_args(_plain(example_inputs)))
    finally:
        for h in handles:
            h.remove()
    return order[-1:]


def _check_ratio(model: nn.Module, ratio: float, ignored: list[nn.Module], couplings: list[ReshapeCoupling],
                 layer_ratios: Mapping[str, float]) -> None:
    """A uniform ratio must leave every layer at least one channel (torch-pruning keeps int(C * (1 - ratio)))."""
    sizes = {n: _out_channels(m) for n, m in model.named_modules() if isinstance(m, _ROOTS) and m not in ignored}
    names = {id(m): n for n, m in model.named_modules()}
    sizes.update({names[id(c.linear)]: c.channels for c in couplings})
    for name, channels in sizes.items():
        own = layer_ratios.get(name, ratio)
        if int(channels * (1 - own)) < 1:
            raise ConfigError(
                f"ratio {own} would remove every channel of layer {name!r} ({channels} channels, "
                f"int({channels} * (1 - {own})) = 0 kept); use a ratio below {1 - 1 / channels:.4g}"
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
    importance = resolve_importance(config.importance, ctx)
    if importance == "l1":
        return l1, {}
    if importance == "l2":
        return tp.importance.MagnitudeImportance(p=2), {}
    if importance == "bn_scale":
        return _WithFallback(tp.importance.BNScaleImportance(), l1), {}
    if importance == "activation":
        act = input_activity(model, ctx, batch_size=config.batch_size, method="activation importance")
        return _WithFallback(_ActivationImportance(act), l1), act
    accumulate_gradients(model, ctx, loss=config.loss, batch_size=config.batch_size, method="taylor importance")
    return _WithFallback(tp.importance.TaylorImportance(), l1), {}


def _named(model: nn.Module, names: tuple[str, ...], what: str = "ignore") -> list[nn.Module]:
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ConfigError(f"{what} names {missing[0]!r}, which is not a layer of {type(model).__name__}")
    return [modules[n] for n in names]


def _args(example: Example) -> tuple[torch.Tensor, ...]:
    return example if isinstance(example, tuple) else (example,)


def _plain(example: Example | GenInputs) -> Example:
    """Generator inputs as the tuple of call arguments (what torch-pruning and fx take), a tensor as it is."""
    return example.args() if isinstance(example, GenInputs) else example


RETRIES = 3  # layers kept whole, one at a time, before a model that no longer runs after pruning is an error


def prune_channels(model: nn.Module, config: ChannelPruning, ctx: PruneContext) -> nn.Module:
    """:func:`prune_channels_once`; where the pruned model no longer runs, the layer that fails keeps its output channels
    and the pruning is done again on the unpruned model (up to ``RETRIES`` layers), with a warning naming them and
    ``ctx.notes["kept_to_run"]`` saying why. torch-pruning can group a model's channels wrongly (a tensor concatenated
    with a resized copy of itself, as a multi-scale skip does) and the failing layer is where the groups meet."""
    kept: dict[str, str] = {}
    while True:
        trial = copy.deepcopy(model) if len(kept) < RETRIES else model
        try:
            pruned = prune_channels_once(trial, config, ctx)
        except _NoLongerRuns as exc:
            if exc.layer is None or exc.layer in config.ignore or len(kept) >= RETRIES:
                raise
            kept[exc.layer] = f"kept whole so the pruned model runs (without it: {exc.reason})"
            config = dataclasses.replace(config, ignore=(*config.ignore, exc.layer))
            continue
        if kept:
            warnings.warn(f"channel pruning kept {', '.join(repr(n) for n in kept)} whole: the model pruned without "
                          f"{'it' if len(kept) == 1 else 'them'} no longer ran (torch-pruning grouped those channels "
                          "wrongly); a model folder's prune step lists them under kept_layers", stacklevel=2)
            ctx.notes["kept_to_run"] = kept
        return pruned


def prune_channels_once(model: nn.Module, config: ChannelPruning, ctx: PruneContext) -> nn.Module:
    """Remove channels (torch-pruning, then the Linear -> reshape couplings); returns the pruned model.

    A model whose forward reshapes with literal widths (``view(-1, 256, 7, 7)``,
    ``reshape(B, self.width, 4, 4)``) is first captured as its width-agnostic graph
    (:func:`slimgen.models.graph.width_agnostic`) and the returned model is that graph module
    (same layer names, recorded so loading rebuilds it); any other model is pruned in place and
    returned. Layers that keep their channels are listed by :func:`kept_layers`.
    """
    example = _plain(ctx.need_example_inputs("ChannelPruning"))
    standardize(model, lambda m: m(*_args(example)))  # hand-written (equalized-lr) layers as the layers they compute
    types = {name: type(m).__name__ for name, m in model.named_modules()}
    leaves = (glu_modules(model, lambda m: m(*_args(example))) + modulated_modules(model)  # kept whole when traced
              + own_modules(model))
    graph = width_agnostic(model, _args(example), leaves)
    if graph is not None:
        model = graph
    bake_parametrizations(model)  # a spectral/weight-normalized layer prunes as the plain layer it computes
    norm_dims, why = channel_dims(model, lambda m: m(*_args(example)))
    with lent_layernorms(model, norm_dims) as norm_pruners:
        return _prune_prepared(model, config, ctx, example, types, norm_pruners, why)


def _prune_prepared(model: nn.Module, config: ChannelPruning, ctx: PruneContext, example: Example,
                    types: dict[str, str], norm_pruners: dict[type, Any], why: dict[str, str]) -> nn.Module:
    """:func:`prune_channels_once` on a model made ready for torch-pruning (hand-written layers standardized,
    parametrizations baked, LayerNorms lent with their channel dimension; ``why`` those without one)."""
    size = sum(p.numel() for p in model.parameters())  # to tell whether anything at all was removed
    modulated = modulated_units(model, lambda m: m(*_args(example)), _named(model, config.ignore))  # StyleGAN2 convs
    layers = own_units(model, lambda m: m(*_args(example)),  # hand-written layers standardize could not replace
                       _named(model, config.ignore) + [model.get_submodule(u.name) for u in modulated])
    attention = multihead_attention(model)  # left whole
    own = config.ignore + tuple(u.name for u in [*modulated, *layers]) + tuple(attention)  # pruned by slimgen, or whole
    free = check_supported(model, own, types, why)
    with in_mode(model), lent_modulated(model, modulated) as mod_pruners, lent_own(model, layers) as own_pruners:
        graph = _graph(model, example, free)
        ignored = (output_layers(model, example, graph) + _named(model, config.ignore) + attention_projections(graph)
                   + [sub for m in attention.values() for sub in m.modules()])
        shuffled, whole = _shuffles(graph, ignored)
        ignored += whole
        skipped = {id(m) for m in ignored}
        skipped |= {id(tied) for m in attention.values() for tied in _out_coupled(graph, m)}  # kept with it
        widths = {n: w for n, w in root_widths(model).items() if id(model.get_submodule(n)) not in skipped
                  and not any(id(layer) in skipped for layer in _out_coupled(graph, model.get_submodule(n)))}
        couplings = [c for c in find_reshape_couplings(model, example) if c.linear not in ignored]
        per_layer = dict(zip(config.layer_ratios, _named(model, tuple(config.layer_ratios), what="layer_ratios"),
                             strict=True))
        if per_layer and config.scope != "uniform":
            raise ConfigError("layer_ratios applies to scope uniform only (global ranks channels across layers)")
        if config.scope == "uniform":
            _check_ratio(model, config.ratio, ignored, couplings, config.layer_ratios)
        importance, activity = make_importance(model, config, ctx)
        scores = [coupling_scores(c, config.importance, activity) for c in couplings]
        names = {id(m): n for n, m in model.named_modules()}
        units = gated_units(model, lambda m: m(*_args(example)), ignored)  # GLUs: pairs of channels, one gate
        chunked = chunked_producers(graph, ignored + [model.get_submodule(u.layer) for u in units])  # AdaIN/FiLM
        if config.scope == "uniform":  # learned constants (StyleGAN's const): no layer roots their channels
            dims = {id(p): d for p, d in free}
            sources = source_parameters(graph, free, (nn.modules.conv._ConvNd, nn.Linear, OwnLayer))
            for p in sources:
                if any(p is q for q in model.parameters()):  # not already pruned with an earlier source's group
                    prune_source(model, graph, p, dims[id(p)], importance, config.ratio)
            if sources:  # each was replaced by its pruned copy: torch-pruning must see the model's own parameters
                free = check_supported(model, own, types, why)
        # torch-pruning's importances skip lent layers: rank by them where nothing else
        if chunked or shuffled or units or modulated or layers:
            importance = _WithFallback(importance, lent_magnitude)
        # the own tensors of a layer named in ignore that torch-pruning does not know as a layer: it would take them
        # for free parameters and cut their last dimension with whatever group reaches them
        kept_tensors = [p for m in _named(model, config.ignore) if not isinstance(m, _SUPPORTED)
                        for p in m.parameters()]
        with lent(model, chunked, shuffled) as custom, lent_units(model, units) as gated:
            with warnings.catch_warnings():  # the free parameters are named below; see dependency_graph
                warnings.filterwarnings("ignore", message="Unwrapped parameters detected", category=UserWarning)
                pruner = tp.pruner.MetaPruner(
                    model, example, importance=importance, pruning_ratio=config.ratio, forward_fn=traced_forward,
                    pruning_ratio_dict={model.get_submodule(n): config.layer_ratios[n] for n in per_layer} or None,
                    global_pruning=config.scope == "global", max_pruning_ratio=config.max_layer_ratio,
                    ignored_layers=ignored + [c.linear for c in couplings] + kept_tensors, unwrapped_parameters=free,
                    customized_pruners={**custom, **gated, **mod_pruners, **own_pruners, **norm_pruners},
                    root_module_types=[ops.TORCH_CONV, ops.TORCH_LINEAR, Shuffled, Gated, ModulatedCore, OwnLayer],
                )
            for n in per_layer:  # torch-pruning takes layer ratios of its own layer types only: set a lent one's
                lent_layer = model.get_submodule(n)  # as it sets theirs (a local scope of its own; torch-pruning 1.6)
                lent_layer = lent_layer.core if isinstance(lent_layer, Modulated) else lent_layer
                if isinstance(lent_layer, Shuffled | Gated | OwnLayer):
                    pruner.pruning_ratio_dict[lent_layer] = pruner.iterative_pruning_ratio_scheduler(
                        config.layer_ratios[n], pruner.iterative_steps)
                    pruner._layer_to_scope[lent_layer] = (f"_slimgen_layer_ratio_{n}", [lent_layer])
            pruner.ignored_layers.extend(_unindexable_roots(pruner))
            try:
                pruner.step()
            except (IndexError, RuntimeError) as exc:
                split = sorted({names[id(m)] for m in split_producers(graph) if id(m) in names and m not in chunked})
                hint = (f"the outputs of {', '.join(repr(n) for n in split)} are split by chunk/split, which "
                        "torch-pruning does not track: list them" if split
                        else "list the layers around the failing coupling")
                raise ConfigError(
                    f"torch-pruning could not group this model's channels ({type(exc).__name__}: {exc}); "
                    f"{hint} in ChannelPruning(ignore=(...)) / --ignore"
                ) from exc
        if couplings:  # the couplings build torch-pruning's graph of the model: one that no longer runs is one line
            _check_runs(model, example)
        for c, s in zip(couplings, scores, strict=True):
            prune_coupling(model, c, s, config.layer_ratios.get(names[id(c.linear)], config.ratio), example, free)
        model.zero_grad(set_to_none=True)
        sync_width_attributes(model)
        _check_runs(model, example)
    over = overpruned_layers(model, widths, config)
    if over:
        raise ConfigError(
            f"torch-pruning cut {', '.join(f'{n!r} to {k} of {c} channels' for n, c, k in over)}, far more than ratio "
            f"{config.ratio} asks: it does not track channels split by chunk/split (GLU-style gating); list "
            f"{'them' if len(over) > 1 else 'it'} in ChannelPruning(ignore=(...)) / --ignore")
    missed = unpruned_layers(model, widths, config)
    unchanged = sum(p.numel() for p in model.parameters()) == size
    if missed and unchanged:  # a prune that changes nothing is no result
        raise ConfigError(f"channel pruning found no channel it could remove: torch-pruning found no way to remove "
                          f"those of {', '.join(repr(n) for n in missed)} ({_NO_WAY})")
    if unchanged:  # every width is the image's, an attention's or a kept layer's: what was asked, but say so
        kept = f" or of a layer kept whole ({', '.join(repr(n) for n in config.ignore)})" if config.ignore else ""
        warnings.warn(f"channel pruning removed nothing: every layer's output channels are tied to the image layer's, "
                      f"an attention's{kept}", stacklevel=2)
    if missed:
        warnings.warn(f"channel pruning removed no channel of {', '.join(repr(n) for n in missed)}: torch-pruning found "
                      f"no way to remove them ({_NO_WAY}); a model folder's prune step lists them under kept_layers",
                      stacklevel=2)
    return model


_NO_WAY = ("their channels are split by chunk/split, tied to a layer it cannot resize, or concatenated with a tensor "
           "no layer makes into a depthwise conv")
UNPRUNED = f"torch-pruning found no way to remove its channels ({_NO_WAY})"


def root_widths(model: nn.Module, skip: Mapping[str, str] | tuple[str, ...] = ()) -> dict[str, int]:
    """Output channels of every Conv/ConvTranspose/Linear layer, by name, but those in ``skip``."""
    return {n: _out_channels(m) for n, m in model.named_modules() if isinstance(m, _ROOTS) and n not in skip}


def overpruned_layers(model: nn.Module, widths: Mapping[str, int], config: ChannelPruning) -> list[tuple[str, int, int]]:
    """(name, channels before, after) of layers a uniform ``config`` left with fewer than half the channels its ratio
    keeps (``int(C * (1 - ratio))``; group-norm rounding moves it by a few): torch-pruning lost track of them."""
    if config.scope != "uniform":
        return []
    after = root_widths(model)
    return [(n, c, after[n]) for n, c in widths.items()
            if n in after and after[n] < max(1, int(c * (1 - config.layer_ratios.get(n, config.ratio)))) / 2]


def unpruned_layers(model: nn.Module, widths: Mapping[str, int], config: ChannelPruning) -> list[str]:
    """Layers of ``widths`` (before pruning) that a uniform ``config`` should have narrowed (its ratio removes at
    least one of their channels) but that kept every channel. Global scope may keep a layer whole on purpose."""
    if config.scope != "uniform":
        return []
    after = root_widths(model)
    return [n for n, c in widths.items() if after.get(n) == c and int(c * (1 - config.layer_ratios.get(n, config.ratio))) < c]


def _unindexable_roots(pruner: tp.pruner.MetaPruner) -> list[nn.Module]:
    """Roots of the groups torch-pruning forms but cannot index: a concat of a layer's output with a tensor no layer
    makes (a noise channel drawn in forward) feeding a depthwise conv gives a group whose indices run past the
    layer's width (IndexError, and no pruning at all). Those roots keep their channels (and so does what shares
    them), reported like any layer torch-pruning found no way to remove; the rest of the model prunes."""
    bad = []
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
        try:
            pruner.estimate_importance(group)
        except IndexError:
            bad.append(group[0][0].target.module)
    return bad


class _NoLongerRuns(ConfigError):
    """The pruned model fails in forward; ``layer``: the innermost Conv/Linear running when it failed, else the last one
    to finish before (a reshape in the model's own forward fails on what that layer made: TransGAN's
    ``fc(z).view(B, N, C)``), if any."""

    def __init__(self, message: str, layer: str | None, reason: str) -> None:
        super().__init__(message)
        self.layer, self.reason = layer, reason


@contextmanager
def _running(model: nn.Module) -> Iterator[tuple[list[str], list[str]]]:
    """The names of the Conv/Linear layers whose forward is running, innermost last, and of the last one to finish
    (while the context is open)."""
    stack: list[str] = []
    finished: list[str] = []  # one name at most

    def done(*_: object) -> None:  # returns None: the layer's output stays
        finished[:] = [stack.pop()]

    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear):
            handles.append(m.register_forward_pre_hook(lambda _m, _a, n=name: stack.append(n)))
            handles.append(m.register_forward_hook(done))
    try:
        yield stack, finished
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _check_runs(model: nn.Module, example: Example) -> None:
    try:
        with quiet_graph(), _running(model) as (stack, finished):
            model(*_args(example))
    except (RuntimeError, AssertionError) as exc:
        raise _NoLongerRuns(
            f"after channel pruning the model no longer runs ({exc}); something in its forward fixes a channel count "
            "slimgen could not rewrite: a submodule it could not trace (it keeps its own code) hard-coding one (e.g. "
            "view(B, 64, 7, 7)), or channels laid out last (tokens (B, N, C), as transformers keep them), which "
            "channel pruning does not follow: list the layers that make that tensor in ignore=(...) / --ignore",
            (stack or finished or [None])[-1], str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc


_ATTENTION = ("Bmm", "ScaledDotProduct", "MatMul", "Matmul")


def _producers(graph: tp.DependencyGraph, op_names: tuple[str, ...], through: tuple[ops.OPTYPE, ...]) -> list[nn.Module]:
    """Conv/Linear layers whose outputs reach an op whose autograd name contains one of ``op_names``."""
    found: list[nn.Module] = []
    for node in list(graph.module2node.values()):
        if not any(k in node.name for k in op_names):
            continue
        stack, seen = list(node.inputs), set()
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n.module, _ROOTS):
                found.append(n.module)
            elif n.type in through:
                stack.extend(n.inputs)
    return found


def _graph(model: nn.Module, example_inputs: Example, free: list[tuple[nn.Parameter, int]] = ()) -> tp.DependencyGraph:
    return dependency_graph(model, example_inputs, free)


def _shuffles(graph: tp.DependencyGraph, skip: list[nn.Module]) -> tuple[dict[nn.Module, int], list[nn.Module]]:
    """The layers feeding a pixel shuffle: those pruned in blocks of r*r (:func:`shuffled_producers`, layer -> r*r),
    and the rest, which keep their channels."""
    shuffled = shuffled_producers(graph, skip)
    return shuffled, [m for m in shuffle_producers(graph) if m not in shuffled]


def shuffle_producers(graph: tp.DependencyGraph) -> list[nn.Module]:
    """Layers whose output channels reach a PixelShuffle/PixelUnshuffle (through activations, norms, and the chunks
    and concatenations of a gate, ``a, b = conv(x).chunk(2, 1); pixel_shuffle(a * sigmoid(b), 2)``).

    Those channels come in blocks of r*r sub-pixel phases that torch-pruning does not track (it
    would treat the shuffle as elementwise and cut across blocks), so they keep their width.
    """
    return _producers(graph, SHUFFLES, (ops.OPTYPE.ELEMENTWISE, ops.OPTYPE.BN, ops.OPTYPE.IN, ops.OPTYPE.GN,
                                         ops.OPTYPE.SPLIT, ops.OPTYPE.CONCAT))


def split_producers(graph: tp.DependencyGraph) -> list[nn.Module]:
    """Layers whose outputs reach a chunk/split (through activations, norms and reshapes): the candidates to name
    when torch-pruning fails on a model (it does not map GLU-style ``a, b = x.chunk(2, 1); a * sigmoid(b)``)."""
    return _producers(graph, ("_SplitOp",), (ops.OPTYPE.ELEMENTWISE, ops.OPTYPE.RESHAPE, ops.OPTYPE.BN,
                                             ops.OPTYPE.IN, ops.OPTYPE.GN))


def multihead_attention(model: nn.Module) -> dict[str, nn.Module]:
    """``nn.MultiheadAttention`` modules: left whole (their embedding width, and the channels tied to it, such as a
    residual stream around them), as the projections of hand-written attention are (:func:`attention_projections`).
    They were refused before, one line asking to ``--ignore`` them."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}


def attention_projections(graph: tp.DependencyGraph) -> list[nn.Module]:
    """The query/key/value projections of self-attention (layers whose outputs reach a matmul/SDPA).

    Their output (head) dimensions stay whole, because no pruning of them is sound here:
    torch-pruning treats a matmul/bmm as elementwise, so it ties dimensions that are not the
    same axis (SAGAN's bmm(q^T, k) contracts C/8 query channels but bmm(v, attn^T) keeps v's C:
    its group maps 64 indices to 8 and 2); every head must shrink by the same amount for the
    (B, L, heads, head_dim) reshape to stay valid; and scaled_dot_product_attention's default
    scale 1/sqrt(head_dim) would change with the head dimension, altering the softmax of a
    trained model. Attention blocks are also a small share of a generator's MACs (diffusers'
    decoder: one mid-block attention at the lowest resolution). The block's input and output
    channels (the residual stream) are pruned as usual unless they are tied to a projection
    kept whole (SAGAN's value projection *is* the residual stream): :func:`kept_layers` lists
    those too.
    """
    return _producers(graph, _ATTENTION, (ops.OPTYPE.ELEMENTWISE, ops.OPTYPE.RESHAPE))


def kept_layers(model: nn.Module, example_inputs: Example | GenInputs, ignore: tuple[str, ...] = (),
                why: Mapping[str, str] | None = None) -> dict[str, str]:
    """Conv/Linear layers (and modulated convs, users' own layers) whose output channels channel pruning leaves whole, each with the
    reason (``why[name]`` for a layer in ``ignore`` that the user did not name there)."""
    example_inputs = _plain(example_inputs)
    run = lambda m: m(*_args(example_inputs))  # noqa: E731
    units = modulated_units(model, run, _named(model, ignore))
    layers = own_units(model, run, _named(model, ignore) + [model.get_submodule(u.name) for u in units])
    with lent_modulated(model, units), lent_own(model, layers):  # as prune_channels saw them: one layer each, named
        return _kept(model, example_inputs, ignore, why or {})  # as the module


def _kept(model: nn.Module, example_inputs: Example, ignore: tuple[str, ...], why: Mapping[str, str]) -> dict[str, str]:
    names = {id(m): n.removesuffix(".core") if isinstance(m, ModulatedCore) else n for n, m in model.named_modules()}
    graph = _graph(model, example_inputs)
    outputs = output_layers(model, example_inputs, graph)
    projections, attention = attention_projections(graph), list(multihead_attention(model).values())
    _, whole = _shuffles(graph, outputs + projections + _named(model, ignore) + attention)
    kept = {names[id(m)]: "writes the model's output (image channels / logits)" for m in outputs}
    kept.update({names[id(m)]: "feeds a PixelShuffle through a norm or another op: its channels are r*r sub-pixel "
                 "blocks torch-pruning does not track" for m in whole})
    kept.update({names[id(m)]: "self-attention projection: head dimensions are left whole (see attention_projections)"
                 for m in projections})
    kept.update({names[id(sub)]: "nn.MultiheadAttention: left whole, its embedding width with it"
                 for m in attention for sub in m.modules()})
    kept.update({n: why.get(n, "named in ignore") for n in ignore})
    modules = dict(model.named_modules())
    whole = [modules[n] for n, r in kept.items() if n in modules and not r.startswith("writes the model's output")]
    for m in whole:  # what shares their output channels (a residual add, a norm) keeps its width with them
        for layer in _out_coupled(graph, m):
            kept.setdefault(names[id(layer)], f"its channels are tied to {names[id(m)]!r}, kept whole ({kept[names[id(m)]]})")
    return kept


def _out_coupled(graph: tp.DependencyGraph, layer: nn.Module) -> list[nn.Module]:
    """Layers with parameters whose output channels are in ``layer``'s torch-pruning group (coupled to its outputs)."""
    pruner = graph.get_pruner_of_module(layer)
    if pruner is None or layer not in graph.module2node:
        return []
    group = graph.get_pruning_group(layer, pruner.prune_out_channels, idxs=[0])
    return [dep.target.module for dep, _ in group
            if dep.target.module is not layer and getattr(dep.handler, "__name__", "") == "prune_out_channels"
            and isinstance(dep.target.module, _SUPPORTED) and list(dep.target.module.parameters(recurse=False))]

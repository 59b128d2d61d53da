"""``Linear -> reshape -> Conv`` couplings, which torch-pruning does not follow.

A Linear with F = C * k outputs reshaped to (B, C, s, s) (k = s * s) feeds channel c from
output features [c*k, (c+1)*k). Removing channel c removes those k features of the Linear,
channel c of any norm layer on the way and input channel c of every consuming convolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from slimgen.errors import ConfigError
from slimgen.models.inputs import GenInputs, tracer_inputs

_PASS = (ops.OPTYPE.ELEMENTWISE, ops.OPTYPE.BN, ops.OPTYPE.IN, ops.OPTYPE.GN, ops.OPTYPE.RESHAPE)


SHUFFLES = ("PixelShuffle", "PixelUnshuffle")  # autograd names of the ops that trade channels for positions
_REORDER = ("Transpose", "Permute", "ChannelShuffle", *SHUFFLES)  # ops that move features: they end a coupling
LENT_PRUNERS: dict[type, tp.pruner.function.BasePruningFunc] = {}  # lent layer type -> its pruner (see register_lent)
LENT_NORMS: set[type] = set()  # lent types that normalize per channel: a Linear -> reshape path passes through them


def register_lent(kind: type, pruner: tp.pruner.function.BasePruningFunc, *, norm: bool = False) -> None:
    """Make every torch-pruning graph built here treat modules of ``kind`` (a layer slimgen lends to torch-pruning,
    e.g. :class:`slimgen.prune.modulated.Modulated`) as one layer pruned by ``pruner``, not as the ops inside.
    ``norm``: a per-channel norm (a LayerNorm over (C, H, W)), which a reshaped Linear's channels pass through."""
    LENT_PRUNERS[kind] = pruner
    if norm:
        LENT_NORMS.add(kind)


def dependency_graph(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
                     free: list[tuple[nn.Parameter, int]] = ()) -> tp.DependencyGraph:
    """torch-pruning's graph of ``model``, told which free parameters slimgen prunes and along which dimension.

    Built quietly: torch-pruning warns about every parameter outside the layers it knows ("Unwrapped parameters
    detected"). slimgen names those it prunes (``free``, from ``check_supported``, which refuses the shapes it cannot
    place); the rest are scalars (SAGAN's gamma), which nothing resizes, and the parameters of layers the user
    listed in ``ignore``, so the warning told a user nothing to act on.
    """
    lent = {t: p for t, p in LENT_PRUNERS.items() if any(isinstance(m, t) for m in model.modules())}
    return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, forward_fn=traced_forward,
                                                 customized_pruners=lent or None,
                                                 unwrapped_parameters=list(free) or None, verbose=False)


def traced_forward(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The model on its example inputs, as torch-pruning traces it. Without it torch-pruning calls ``model(*x)`` and,
    on any error, ``model(x)`` again with the whole tuple, which hides the first error behind a TypeError."""
    return model(*example_inputs) if isinstance(example_inputs, tuple | list) else model(example_inputs)


@dataclass
class ReshapeCoupling:
    """A Linear whose ``channels * k`` outputs become ``channels`` feature maps read by ``consumers``."""

    linear: nn.Linear
    norms: list[nn.Module]
    consumers: list[nn.Module]
    channels: int

    @property
    def k(self) -> int:
        return self.linear.out_features // self.channels


def _walk(start: tp.Node) -> tuple[list[nn.Module], list[nn.Module]] | None:
    """Follow a Linear's output through reshapes, activations and norms (lent LayerNorms over (C, H, W) too):
    (norms, convolutions), or None.

    None when the path meets anything else first (another Linear, a concat, an output, a transpose or pixel shuffle
    that moves features between positions and channels):
    torch-pruning handles those itself. Elementwise ops with several inputs (a residual add, a
    conditional norm's per-class scale) are passed: the other inputs join the group when it is
    pruned (:func:`prune_coupling`). The reshape need not appear as a node (an in-place
    activation on a view shows up as a copy), so the path is judged by the layers it reaches.
    """
    seen, stack = set(), list(start.outputs)
    norms: list[nn.Module] = []
    consumers: list[nn.Module] = []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.type == ops.OPTYPE.CONV or _lent_layer(node.module):
            consumers.append(node.module)
            continue
        if type(node.module) in LENT_NORMS and len(node.inputs) == 1:
            norms.append(node.module)
            stack.extend(node.outputs)
            continue
        if node.type not in _PASS or (len(node.inputs) > 1 and node.type != ops.OPTYPE.ELEMENTWISE) or not node.outputs:
            return None
        if any(op in node.name for op in _REORDER):  # tokens (B, N, C) transposed to a map: not C groups of k
            return None
        if node.type in (ops.OPTYPE.BN, ops.OPTYPE.IN, ops.OPTYPE.GN):
            norms.append(node.module)
        stack.extend(node.outputs)
    return (norms, consumers) if consumers else None


def find_reshape_couplings(model: nn.Module, example_inputs: torch.Tensor | GenInputs) -> list[ReshapeCoupling]:
    """Every Linear whose output is reshaped into the channels of one or more convolutions."""
    graph = dependency_graph(model, tracer_inputs(example_inputs))
    found = []
    for module, node in graph.module2node.items():
        if not isinstance(module, nn.Linear):
            continue
        walked = _walk(node)
        if walked is None:
            continue
        norms, consumers = walked
        channels = _in_channels(consumers[0])
        if module.out_features % channels or any(_in_channels(c) != channels for c in consumers):
            raise ConfigError(f"Linear with {module.out_features} outputs feeds convolutions with "
                              f"{[_in_channels(c) for c in consumers]} input channels: not a whole reshape")
        if module.out_features == channels:  # (B, C) -> (B, C, 1, 1): channel i stays channel i, torch-pruning's
            continue  # own group handles it (with whatever else it ties, e.g. a learned constant it scales)
        found.append(ReshapeCoupling(module, norms, consumers, channels))
    return found


def _lent_layer(module: object) -> bool:
    """A layer slimgen lends to torch-pruning with a weight of known channel dimensions (``unit.in_dim``): a user's
    hand-written layer or a modulated conv (:func:`register_lent`)."""
    return type(module) in LENT_PRUNERS and hasattr(module, "unit")


def _in_channels(consumer: nn.Module) -> int:
    return LENT_PRUNERS[type(consumer)].get_in_channels(consumer) if _lent_layer(consumer) else consumer.in_channels


def _in_first(consumer: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``t`` (shaped like the consumer's weight) with the input-channel axis first."""
    if _lent_layer(consumer):
        return t.movedim(consumer.unit.in_dim, 0)
    return t if consumer.transposed else t.transpose(0, 1)


def _conv_in_slices(conv: nn.Module) -> torch.Tensor:
    """Weight with the input-channel axis first: (C_in, ...)."""
    return _in_first(conv, conv.weight)


@torch.no_grad()
def coupling_scores(c: ReshapeCoupling, importance: str, activity: dict[nn.Module, torch.Tensor]) -> torch.Tensor:
    """(C,) importance of the coupling's channels, each member's score divided by its mean, then averaged."""
    if importance == "activation" and all(m in activity for m in c.consumers):
        members = [activity[m] for m in c.consumers]
    elif importance == "bn_scale" and any(getattr(n, "weight", None) is not None for n in c.norms):
        members = [n.weight.detach().abs().reshape(c.channels, -1).mean(1) for n in c.norms  # a LayerNorm: (C, H, W)
                   if getattr(n, "weight", None) is not None]
    elif importance == "taylor":
        grad = c.linear.weight.grad
        members = [_grad_score(c.linear.weight.reshape(c.channels, -1),
                               None if grad is None else grad.reshape(c.channels, -1))]
        members += [_grad_score(_conv_in_slices(m).reshape(c.channels, -1), _grad_of(m, c.channels))
                    for m in c.consumers]
    else:
        p = 2 if importance == "l2" else 1
        tensors = [c.linear.weight.reshape(c.channels, -1)] + [_conv_in_slices(m).reshape(c.channels, -1)
                                                              for m in c.consumers]
        members = [t.abs().pow(p).sum(1) for t in tensors]
    return torch.stack([m / m.mean().clamp_min(1e-12) for m in members]).mean(0)


def _grad_of(consumer: nn.Module, channels: int) -> torch.Tensor | None:
    """The consumer's weight gradient with the input-channel axis first, (channels, -1); None without one."""
    if consumer.weight.grad is None:
        return None
    return _in_first(consumer, consumer.weight.grad).reshape(channels, -1)


def _grad_score(w: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    return w.abs().sum(1) if g is None else (w * g).abs().sum(1)


def prune_group(model: nn.Module, group: tp.Group, *, skip: nn.Module | None = None) -> None:
    """Apply every pruning of a torch-pruning ``group`` but ``skip``'s; a free parameter's pruning returns a new
    parameter, put in its place here (torch-pruning's own ``Group.prune`` fails to find it by name)."""
    params = {id(p): n for n, p in model.named_parameters()}
    for dep, idxs in group:
        if dep.target.module is skip:
            continue
        if dep.target.type == ops.OPTYPE.PARAMETER:
            parent, _, attr = params[id(dep.target.module)].rpartition(".")
            setattr(model.get_submodule(parent), attr, dep(idxs))
        else:
            dep(idxs)


def prune_coupling(model: nn.Module, c: ReshapeCoupling, scores: torch.Tensor, ratio: float,
                   example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
                   free: list[tuple[nn.Parameter, int]] = ()) -> None:
    """Remove the lowest-scoring channels, keeping int(C * (1 - ratio)) as torch-pruning does.

    The Linear loses the k output features of each removed channel; everything else coupled to
    those channels (norms, conditional-norm embeddings, the other inputs of adds, consuming
    convolutions) is pruned as torch-pruning's group of the first consumer's input channels,
    which it builds correctly in this direction. ``free``: the free parameters and their channel
    dimension (``check_supported``), pruned with the channels they are tied to.
    """
    keep = int(c.channels * (1 - ratio))
    if keep < 1:
        raise ConfigError(f"ratio {ratio} would remove every one of the {c.channels} channels a Linear is reshaped into")
    drop = sorted(torch.argsort(scores, stable=True)[: c.channels - keep].tolist())
    k = c.k
    graph = dependency_graph(model, example_inputs, free)
    first = c.consumers[0]
    into = LENT_PRUNERS[type(first)].prune_in_channels if _lent_layer(first) else tp.prune_conv_in_channels
    group = graph.get_pruning_group(first, into, idxs=drop)
    prune_group(model, group, skip=c.linear)
    tp.prune_linear_out_channels(c.linear, [ch * k + j for ch in drop for j in range(k)])

"""Run a user's model through its own traced graph, with constant reshapes made width-agnostic.

GAN code reshapes with constants: ``x.view(-1, 256, 7, 7)`` after a Linear, ``reshape(B,
self.width, 4, 4)``, ``gamma.view(-1, self.num_features, 1, 1)``. Once pruning removes channels
those constants are wrong and the forward fails. Rather than asking users to edit their class,
slimgen captures the forward with ``torch.fx.symbolic_trace`` (stored widths such as
``self.width`` become literals in the graph) and rewrites every ``view``/``reshape`` whose
channel dimension (dim 1, NCHW) is a literal, in one of two forms: ``unsqueeze`` turns
``v.view(B, C, 1, 1)`` of a (B, C) tensor into ``v[:, :, None, None]`` (a conditional norm's
per-class scale, which torch-pruning then follows channel by channel), ``infer`` reads the
batch dimension from the input (``x.size(0)``) and makes the channel dimension ``-1``. A
rewrite is kept only if the module gives bit-identical outputs with it at batch sizes B, 1
and B + 1, so a reshape that means something else is left alone.

**How a rewritten model is stored.** The folder keeps the user's class, its constructor
kwargs and the pruned tensor shapes as for any model, plus ``"graph": {"version": 1,
"leaves": [...], "rewritten": {node: form}}`` in the part's config. Loading builds the class, traces
it again and re-applies exactly the recorded rewrites (node names are deterministic for a
given class and kwargs), then resizes the layers and loads the weights. Nothing executable is
stored: no pickle, no generated source. The alternative, storing the graph itself, would need
an allow-list of every op a forward can contain and would silently drift from the user's class
when its code is fixed; re-tracing keeps the class as the single source of truth and fails
loudly (a recorded node that no longer exists) when the class changed.

Submodules that cannot be traced symbolically (control flow on tensor values or shapes, as in
diffusers' attention processors and ``Upsample2D``) are kept as leaves: they run their own
Python code, which must read widths from tensor shapes (those do; a leaf that hard-codes a
channel count is reported by the pruner's run check).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from slimgen.errors import ModelFolderError
from slimgen.models.factorized import LowRank, restore_factorized
from slimgen.models.mode import in_mode
from slimgen.models.standard import restore_standard
from slimgen.models.surgery import conv_weight_of, resize_to, restore_geometry, users_layer

GRAPH_VERSION = 1
_ATTR = "_slimgen_graph"
_RESHAPES = ("view", "reshape")
FORMS = ("unsqueeze", "infer")  # rewrite forms, tried in this order


@dataclass(frozen=True)
class GraphRecord:
    """What ``config.json`` records about a part that runs through its rewritten graph."""

    leaves: tuple[str, ...]
    rewritten: dict[str, str]
    version: int = GRAPH_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "leaves": list(self.leaves), "rewritten": dict(self.rewritten)}

    @classmethod
    def from_dict(cls, data: Any) -> GraphRecord:
        if not isinstance(data, dict) or data.get("version") != GRAPH_VERSION:
            raise ModelFolderError(f"part graph record must be a dict with version {GRAPH_VERSION}, got {data!r}")
        leaves, rewritten = data.get("leaves", []), data.get("rewritten", {})
        if not isinstance(leaves, list) or not all(isinstance(n, str) for n in leaves) or not isinstance(rewritten, dict) \
                or not all(isinstance(n, str) and f in FORMS for n, f in rewritten.items()):
            raise ModelFolderError(f"part graph record: leaves must be a list of names and rewritten map node names to "
                                   f"one of {', '.join(FORMS)}; got {data!r}")
        return cls(tuple(leaves), dict(rewritten))


class _LeafFallbackTracer(fx.Tracer):
    """symbolic_trace that keeps a submodule whole (a leaf) when tracing through it fails.

    The nodes the failed attempt created are erased, so the graph is what tracing with that
    module declared a leaf from the start would give.
    """

    def __init__(self, leaves: Sequence[str] = ()) -> None:
        super().__init__()
        self.leaves: list[str] = list(leaves)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # a factorized layer stays one module (its class is what the folder records)
        return (module_qualified_name in self.leaves or isinstance(m, LowRank)
                or super().is_leaf_module(m, module_qualified_name))

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            name = self.path_of_module(m)
        except NameError:  # made in forward (``PixelNorm()(x)``), not a submodule: no node of its own, its code inline
            if next(m.parameters(), None) is not None or next(m.buffers(), None) is not None:
                raise  # tensors the model does not own: cannot be traced
            return forward(*args, **kwargs)
        if self.is_leaf_module(m, name):
            return super().call_module(m, forward, args, kwargs)
        before, stack = list(self.graph.nodes), self.module_stack.copy()
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:  # any failure while tracing through a submodule makes it a leaf
            self.module_stack.clear()
            self.module_stack.update(stack)
            known = set(before)
            for node in reversed([n for n in self.graph.nodes if n not in known]):
                self.graph.erase_node(node)
            self.leaves.append(name)
            return self.create_proxy("call_module", name, args, kwargs)


class SlimGraphModule(fx.GraphModule):
    """A GraphModule whose deep copies keep slimgen's state on the module (graph record, input contract)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SlimGraphModule:
        res = super().__deepcopy__(memo)
        for key, value in self.__dict__.items():
            if key.startswith("_slimgen_"):
                object.__setattr__(res, key, copy.deepcopy(value, memo))
        return res


def trace(model: nn.Module, leaves: Sequence[str] = ()) -> tuple[SlimGraphModule, tuple[str, ...]]:
    """``model``'s forward as an fx.GraphModule (same submodule and parameter names) and its leaf submodules."""
    tracer = _LeafFallbackTracer(leaves)
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        raise ModelFolderError(f"cannot trace {type(model).__name__}.forward with torch.fx ({type(exc).__name__}: {exc})") from exc
    gm = SlimGraphModule(tracer.root, graph, type(model).__name__)
    return gm, tuple(tracer.leaves)


def _shape_args(node: fx.Node) -> list[Any] | None:
    """The target shape of a view/reshape node as a list (ints and nodes), or None if it is not one."""
    if node.op == "call_method" and node.target in _RESHAPES:
        rest = list(node.args[1:])
    elif node.op == "call_function" and node.target is torch.reshape:
        rest = list(node.args[1:])
    else:
        return None
    if len(rest) == 1 and isinstance(rest[0], list | tuple):
        rest = list(rest[0])
    return rest


def _width_free(shape: list[Any], source: fx.Node, graph: fx.Graph) -> list[Any] | None:
    """``shape`` with a literal batch dim read from ``source`` and a literal dim 1 made -1, or None if nothing changes."""
    if len(shape) < 2 or not isinstance(shape[1], int) or shape[1] == -1 or any(s == -1 for s in shape[2:]):
        return None
    new = list(shape)
    if isinstance(new[0], int):
        with graph.inserting_before(source.next):
            new[0] = graph.call_method("size", (source, 0))
    new[1] = -1
    return new


def _rewrite(gm: fx.GraphModule, name: str, form: str) -> bool:
    """Rewrite node ``name`` in place: ``infer`` (batch from the input, channels -1) or ``unsqueeze``.

    ``unsqueeze`` turns ``v.view(B, C, 1, 1)`` of a (B, C) tensor into ``v[:, :, None, None]``
    (unsqueezes), which torch-pruning follows channel by channel; a reshape it does not.
    """
    node = next((n for n in gm.graph.nodes if n.name == name), None)
    shape = None if node is None else _shape_args(node)
    if node is None or shape is None or form not in FORMS:
        return False
    if form == "unsqueeze":
        if len(shape) < 3 or any(s != 1 for s in shape[2:]):
            return False
        with gm.graph.inserting_before(node):
            new: fx.Node = node.args[0]
            for _ in shape[2:]:
                new = gm.graph.call_method("unsqueeze", (new, -1))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    else:
        infer = _width_free(shape, node.args[0], gm.graph)
        if infer is None:
            return False
        node.args = (node.args[0], *infer) if node.op == "call_method" else (node.args[0], tuple(infer))
    gm.graph.lint()
    gm.recompile()
    return True


def candidates(gm: fx.GraphModule) -> list[str]:
    """Names of the view/reshape nodes whose shape has a literal channel dimension."""
    out = []
    for node in gm.graph.nodes:
        shape = _shape_args(node)
        if shape is not None and len(shape) >= 2 and isinstance(shape[1], int) and shape[1] != -1 \
                and not any(s == -1 for s in shape[2:]):
            out.append(node.name)
    return out


def _batches(example: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, ...]]:
    n = example[0].shape[0]
    return [example] + ([tuple(t[:1] for t in example)] if n > 1 else []) + [tuple(torch.cat([t, t[:1]]) for t in example)]


def quiet_graph() -> contextlib.AbstractContextManager[object]:
    """Within: what a failing GraphModule prints on stderr before it raises (a page of generated code) is dropped;
    the exception still comes, for the caller to turn into one line."""
    return contextlib.redirect_stderr(io.StringIO())


@torch.no_grad()
def _same(a: nn.Module, b: nn.Module, examples: list[tuple[torch.Tensor, ...]]) -> bool:
    try:  # a failing rewrite is a rejected trial, not the user's concern
        with quiet_graph():
            return all(torch.equal(a(*x), b(*x)) for x in examples)
    except Exception:  # the rewrite made the forward fail: not the same model
        return False


@torch.no_grad()
def width_agnostic(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...],
                   leaves: Sequence[str] = ()) -> fx.GraphModule | None:
    """``model`` as a GraphModule whose constant reshapes follow the channel width, or None if it needs none.

    ``example``: one batch of the model's inputs, (B, ...) or a tuple (z, y). Each rewrite
    is kept only if outputs stay bit-identical at batch sizes B, 1 and B + 1. None when the
    model has no literal reshape (it prunes as it is) or cannot be traced. ``leaves``: submodules
    to keep whole in the graph (e.g. GLU modules, which channel pruning lends as units).
    """
    args = example if isinstance(example, tuple) else (example,)
    if graph_record(model) is not None:
        return None
    try:
        gm, leaves = trace(model, leaves)
    except ModelFolderError:
        return None
    with in_mode(model):
        gm.eval()
        examples = _batches(args)
        kept: dict[str, str] = {}
        for name in candidates(gm):
            for form in FORMS:
                trial, _ = trace(model, leaves)
                done = [_rewrite(trial, n, f) for n, f in [*kept.items(), (name, form)]]
                if all(done) and _same(model, trial, examples):
                    kept[name] = form
                    break
    if not kept:
        return None
    gm = restore(model, GraphRecord(leaves, kept)).train(model.training)
    for key, value in model.__dict__.items():  # slimgen's state on the module (input contract, ...) carries over
        if key.startswith("_slimgen_") and key != _ATTR:
            object.__setattr__(gm, key, value)
    return gm


def restore(model: nn.Module, record: GraphRecord) -> fx.GraphModule:
    """Trace ``model`` with the recorded leaves and re-apply the recorded rewrites (loading a folder)."""
    gm, _ = trace(model, record.leaves)
    for name, form in record.rewritten.items():
        if not _rewrite(gm, name, form):
            raise ModelFolderError(
                f"{type(model).__name__}: the recorded reshape {name!r} is not in its traced graph any more "
                "(was the class changed since the model was saved?)"
            )
    object.__setattr__(gm, _ATTR, record)
    return gm


def graph_record(module: nn.Module) -> GraphRecord | None:
    """The record of a module that runs through its rewritten graph, or None for a plain module."""
    record = getattr(module, _ATTR, None)
    return record if isinstance(record, GraphRecord) else None


def restore_from_config(module: nn.Module, data: Any) -> nn.Module:
    """Load-time hook: ``module`` itself when config.json records no graph, else its rewritten graph."""
    return module if data is None else restore(module, GraphRecord.from_dict(data))


def sync_width_attributes(model: nn.Module) -> None:
    """Set the stored widths of blocks that check them to their pruned convolution's widths.

    Some library blocks keep their widths as ints and assert on them in forward (diffusers'
    ``Upsample2D``/``Downsample2D``: ``assert x.shape[1] == self.channels``). For every
    non-torch module with a ``conv`` child and an int ``channels`` attribute, ``channels`` becomes
    ``conv.in_channels`` and ``out_channels`` (if an int) ``conv.out_channels``.
    An ``nn.Unflatten`` of the feature dimension into (C, *spatial) (a Linear's output made
    channels) gets C = -1: unflatten infers it, so it follows the pruned width and gives the
    same shape as before for the unpruned width. A non-torch module with its own conv-shaped ``weight``
    (1, ..., C_out, C_in, k, k) (a StyleGAN2 modulated conv, which may reshape by ``self.out_channel``) gets its int
    ``in_channel(s)`` / ``out_channel(s)`` from that weight.
    """
    for module in model.modules():
        sync_own_weight(module)
        if isinstance(module, nn.Unflatten) and module.dim in (1, -1) and len(module.unflattened_size) > 1 \
                and all(isinstance(s, int) and s > 0 for s in module.unflattened_size[1:]):
            module.unflattened_size = (-1, *module.unflattened_size[1:])  # (C, H, W) -> (-1, H, W)
            continue
        conv = getattr(module, "conv", None)
        if not users_layer(module) or not isinstance(conv, nn.modules.conv._ConvNd):
            continue
        if isinstance(getattr(module, "channels", None), int):
            module.channels = conv.in_channels
            if isinstance(getattr(module, "out_channels", None), int):
                module.out_channels = conv.out_channels


_WIDTHS = {"in_channel": 1, "in_channels": 1, "out_channel": 0, "out_channels": 0}  # attribute -> dim after C_out


def sync_own_weight(module: nn.Module) -> None:
    """A non-torch module's int ``in_channel(s)`` / ``out_channel(s)`` from its own conv-shaped ``weight``."""
    found = conv_weight_of(module)
    if found is None:
        return
    w, out_dim = found
    for attr, d in _WIDTHS.items():
        if isinstance(module.__dict__.get(attr), int) and not isinstance(module.__dict__[attr], bool):
            setattr(module, attr, w.shape[out_dim + d])


def restore_part(module: nn.Module, part_config: dict[str, Any]) -> nn.Module:
    """Load-time hook for one part of config.json: its graph (if recorded), factorized layers, then its pruned shapes.

    Returns ``module`` resized in place, or its rewritten graph module when the part records one. Custom
    layers recorded as standard ones (:mod:`slimgen.models.standard`) are swapped first, as they were
    before the graph was traced.
    """
    module = restore_standard(module, part_config.get("standard_layers"))
    module = restore_from_config(module, part_config.get("graph"))
    module = restore_factorized(module, part_config.get("factorized"))
    resize_to(module, part_config.get("shapes", {}))
    restore_geometry(module, part_config.get("geometry"))
    sync_width_attributes(module)
    return module


def graph_config(module: nn.Module) -> dict[str, Any]:
    """Save-time hook: ``{"graph": record}`` for a part that runs through its rewritten graph, else ``{}``."""
    record = graph_record(module)
    return {} if record is None else {"graph": record.to_dict()}

"""Model folders: ``config.json`` + ``model.safetensors`` (+ ``metrics.json``, ``card.md``).

A folder holds one generative model as named parts (``generator``, and ``discriminator`` for a
GAN or ``encoder`` for a VAE). Loading builds each part from its architecture, resizes the
layers that pruning changed, then loads the weights; no pickle is involved.
"""

from __future__ import annotations

import copy
import datetime as _dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.io import load_pickle_checkpoint, read_json, write_atomic, write_json, write_text
from slimgen.models.inputs import InputSpec, set_inputs
from slimgen.models.registry import architecture_name, build
from slimgen.models.state import attach_folder_state
from slimgen.models.surgery import resize_to
from slimgen.storage import Encoding, decode_tensor, encode_tensor

FORMAT_VERSION = 1
CONFIG, WEIGHTS, METRICS, CARD = "config.json", "model.safetensors", "metrics.json", "card.md"
KINDS = ("gan", "vae", "classifier")


@dataclass
class PartSpec:
    """How to rebuild one part: architecture name and constructor kwargs."""

    arch: str
    kwargs: dict[str, Any]


@dataclass
class ModelBundle:
    """A loaded model folder: parts by name plus what ``config.json`` says about them."""

    kind: str
    parts: dict[str, nn.Module]
    specs: dict[str, PartSpec]
    latent_dim: int | None = None
    image_shape: tuple[int, int, int] = (1, 28, 28)
    steps: list[dict[str, Any]] = field(default_factory=list)
    encodings: dict[str, Encoding] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    inputs: InputSpec | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelFolderError(f"unknown model kind {self.kind!r}; known: {', '.join(KINDS)}")
        missing = set(self.parts) ^ set(self.specs)
        if missing:
            raise ModelFolderError(f"parts and specs disagree on {sorted(missing)}")
        # The input contract: given, or the classic (B, latent_dim) normal latent of older folders.
        if self.inputs is None and self.latent_dim is not None:
            self.inputs = InputSpec.latent(int(self.latent_dim))
        if self.inputs is not None:
            shape = self.inputs.latent_shape
            self.latent_dim = shape[0] if len(shape) == 1 else None
            if "generator" in self.parts:
                set_inputs(self.parts["generator"], self.inputs)
        self.sync_state()

    def sync_state(self) -> ModelBundle:
        """Put the bundle's record (encodings, activation settings, steps, arch) on each part module.

        The module then carries its compression state through verbs that take a plain
        ``nn.Module`` (see :mod:`slimgen.models.state`); returns ``self``.
        """
        for name, module in self.parts.items():
            spec = self.specs[name]
            attach_folder_state(module, name, encodings=self.encodings, meta=self.meta, steps=self.steps,
                                arch=spec.arch, kwargs=spec.kwargs)
        return self

    @classmethod
    def from_modules(cls, kind: str, parts: dict[str, nn.Module], kwargs: dict[str, dict[str, Any]], **rest: Any) -> ModelBundle:
        """Bundle freshly built modules; ``kwargs[name]`` are the constructor kwargs of part ``name``."""
        specs = {n: PartSpec(architecture_name(m), dict(kwargs.get(n, {}))) for n, m in parts.items()}
        return cls(kind=kind, parts=parts, specs=specs, **rest)

    @property
    def generator(self) -> nn.Module:
        if "generator" not in self.parts:
            raise ModelFolderError(f"this {self.kind} model folder has no generator part")
        return self.parts["generator"]

    @property
    def discriminator(self) -> nn.Module | None:
        return self.parts.get("discriminator")

    def copy(self) -> ModelBundle:
        """A deep copy (modules included) that shares nothing with ``self``, prune masks included.

        torch.nn.utils.prune caches ``weight = weight_orig * weight_mask`` as a non-leaf tensor,
        which deepcopy refuses; the cache is recomputed on every forward, so detaching it is safe.
        """
        from torch.nn.utils import prune as torch_prune

        for module in (m for part in self.parts.values() for m in part.modules()):
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, torch_prune.BasePruningMethod):
                    setattr(module, hook._tensor_name, getattr(module, hook._tensor_name).detach())
        return copy.deepcopy(self)

    def with_step(self, step: dict[str, Any]) -> ModelBundle:
        """Record a finished step (method name + settings) in the history saved to config.json."""
        self.steps = [*self.steps, step]
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every part's tensors, keys prefixed by part name (``generator.net.0.weight``)."""
        return {f"{p}.{k}": v for p, m in self.parts.items() for k, v in m.state_dict().items()}


def _shape_overrides(spec: PartSpec, module: nn.Module) -> dict[str, list[int]]:
    """Tensors whose shape differs from a fresh build of ``spec`` (layers changed by pruning)."""
    fresh = build(spec.arch, spec.kwargs).state_dict()
    return {k: list(v.shape) for k, v in module.state_dict().items() if k in fresh and fresh[k].shape != v.shape}


def save_folder(bundle: ModelBundle, path: str | Path, *, card: str | None = None) -> Path:
    """Write ``bundle`` to the folder ``path`` (created; existing config/weights replaced atomically)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    stored: dict[str, torch.Tensor] = {}
    tensor_meta: dict[str, Any] = {}
    for name, tensor in bundle.state_dict().items():
        enc = bundle.encodings.get(name)
        if enc is None or enc.codec == "dense":
            stored[name] = tensor.detach().cpu().contiguous()
            continue
        items, meta = encode_tensor(name, tensor, enc)
        stored.update(items)
        tensor_meta[name] = meta
    parts_cfg = {}
    for name, module in bundle.parts.items():
        spec = bundle.specs[name]
        parts_cfg[name] = {"arch": spec.arch, "kwargs": spec.kwargs, "shapes": _shape_overrides(spec, module)}
    config = {
        "format_version": FORMAT_VERSION,
        "kind": bundle.kind,
        "latent_dim": bundle.latent_dim,
        "inputs": None if bundle.inputs is None else bundle.inputs.to_dict(),
        "image_shape": list(bundle.image_shape),
        "parts": parts_cfg,
        "tensors": tensor_meta,
        "steps": bundle.steps,
        "meta": bundle.meta,
    }
    write_atomic(path / WEIGHTS, lambda p: save_file(stored, str(p), metadata={"format": "slimgen"}))
    write_json(path / CONFIG, config)
    if card is not None:
        write_text(path / CARD, card)
    bundle.path = path
    return path


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelFolderError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFolderError(f"{path}: corrupt or truncated safetensors file ({exc})") from exc


def _load_part_state(module: nn.Module, state: dict[str, torch.Tensor], part: str, folder: Path) -> None:
    expected = module.state_dict()
    for key, value in expected.items():
        full = f"{part}.{key}"
        if key not in state:
            raise ModelFolderError(f"{folder}: weights lack tensor {full!r} that config.json's architecture needs")
        if state[key].shape != value.shape:
            raise ModelFolderError(
                f"{folder}: tensor {full!r} has shape {list(state[key].shape)} in {WEIGHTS} "
                f"but {list(value.shape)} in the model config.json describes"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ModelFolderError(f"{folder}: weights hold tensor {part}.{extra[0]!r} that the architecture does not have")
    module.load_state_dict(state, strict=True)


def load_folder(path: str | Path) -> ModelBundle:
    """Rebuild the model in folder ``path`` (or ``zoo:NAME``) exactly, in eval mode."""
    from slimgen.models.zoo import resolve_model_path

    folder = resolve_model_path(path)
    config = read_json(folder / CONFIG)
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFolderError(f"{folder}: config.json format_version {version!r}; this slimgen reads {FORMAT_VERSION}")
    try:
        parts_cfg = config["parts"]
        kind = config["kind"]
    except KeyError as exc:
        raise ModelFolderError(f"{folder}: config.json lacks {exc}") from exc
    raw = _load_weights(folder / WEIGHTS)
    tensors_meta: dict[str, Any] = config.get("tensors", {})
    decoded = dict(raw)
    for name, meta in tensors_meta.items():
        decoded = {k: v for k, v in decoded.items() if not k.startswith(name + ".__")}
        decoded[name] = decode_tensor(name, raw, meta)
    parts: dict[str, nn.Module] = {}
    specs: dict[str, PartSpec] = {}
    for name, pc in parts_cfg.items():
        spec = PartSpec(pc["arch"], dict(pc.get("kwargs", {})))
        module = build(spec.arch, spec.kwargs)
        resize_to(module, pc.get("shapes", {}))
        prefix = f"{name}."
        _load_part_state(module, {k[len(prefix):]: v for k, v in decoded.items() if k.startswith(prefix)}, name, folder)
        parts[name], specs[name] = module.eval(), spec
    encodings = {n: Encoding(m["codec"], m.get("params", {})) for n, m in tensors_meta.items()}
    try:
        inputs = None if config.get("inputs") is None else InputSpec.from_dict(config["inputs"])
    except ConfigError as exc:
        raise ModelFolderError(f"{folder}: config.json {exc}") from exc
    return ModelBundle(
        inputs=inputs,
        kind=kind, parts=parts, specs=specs, latent_dim=config.get("latent_dim"),
        image_shape=tuple(config.get("image_shape", (1, 28, 28))), steps=list(config.get("steps", [])),
        encodings=encodings, meta=dict(config.get("meta", {})), path=folder,
    )


def import_checkpoint(
    weights: str | Path, arch: str, kwargs: dict[str, Any], *, latent_dim: int,
    image_shape: tuple[int, int, int], trust_pickle: bool = False,
) -> ModelBundle:
    """Wrap a user's generator (``module:Class`` + kwargs + a .safetensors/.pt state dict) as a GAN bundle."""
    weights = Path(weights)
    module = build(arch, kwargs)
    if weights.suffix == ".safetensors":
        state = _load_weights(weights)
    else:
        state = load_pickle_checkpoint(weights, trust_pickle=trust_pickle)
        if isinstance(state, nn.Module):
            state = state.state_dict()
        if not isinstance(state, dict):
            raise ModelFolderError(f"{weights}: expected a state dict, found {type(state).__name__}")
    _load_part_state(module, state, "generator", weights)
    return ModelBundle(
        kind="gan", parts={"generator": module.eval()}, specs={"generator": PartSpec(arch, kwargs)},
        latent_dim=latent_dim, image_shape=image_shape,
        steps=[{"step": "import", "weights": str(weights), "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}],
    )


def weight_bytes(path: str | Path) -> int:
    """Bytes of the folder's ``model.safetensors`` as stored (packing and sparsity count)."""
    from slimgen.models.zoo import resolve_model_path

    return (resolve_model_path(path) / WEIGHTS).stat().st_size


def copy_folder(src: str | Path, dst: str | Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)

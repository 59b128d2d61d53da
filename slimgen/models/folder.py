"""Model folders: ``config.json`` + ``model.safetensors`` (+ ``metrics.json``, ``card.md``).

A folder holds one generative model as named parts (``generator``, and ``discriminator`` for a
GAN or ``encoder`` for a VAE). Loading builds each part from its architecture, resizes the
layers that pruning changed, then loads the weights; no pickle is involved.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from slimgen.errors import ConfigError, ModelFolderError, OutputError
from slimgen.io import atomic_folder, load_pickle_checkpoint, read_json
from slimgen.models.factorized import records, restore_factorized
from slimgen.models.graph import graph_config, restore_part
from slimgen.models.inputs import GenInputs, InputSpec, set_inputs
from slimgen.models.labels import labels_as
from slimgen.models.registry import ARCHITECTURES, MAX_ELEMENTS, architecture_name, build, check_arch, resolve
from slimgen.models.standard import standard_config
from slimgen.models.state import attach_folder_state
from slimgen.models.surgery import bake_parametrizations, bake_to_match, geometry_overrides
from slimgen.storage import CODECS, Encoding, decode_tensor, encode_tensor

FORMAT_VERSION = 1
CONFIG, WEIGHTS, METRICS, CARD = "config.json", "model.safetensors", "metrics.json", "card.md"
CALIBRATION = "calibration.safetensors"  # the calibration inputs quantize was given, when they were
KINDS = ("gan", "vae", "classifier")
MAX_INPUT_ELEMENTS = 2**24  # values in one latent or one image a folder may declare


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
    calibration: GenInputs | None = None  # the inputs quantize was given (int8 export calibrates on them)

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
            for name, module in self.parts.items():
                labelled(module, name, self.inputs)
        self.sync_state()

    def sync_state(self) -> ModelBundle:
        """Put the bundle's record (encodings, activation settings, steps, arch) on each part module.

        The module then carries its compression state through verbs that take a plain
        ``nn.Module`` (see :mod:`slimgen.models.state`); returns ``self``.
        """
        for name, module in self.parts.items():
            spec = self.specs[name]
            attach_folder_state(module, name, encodings=self.encodings, meta=self.meta, steps=self.steps,
                                arch=spec.arch, kwargs=spec.kwargs, calibration=self.calibration)
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


def labelled(module: nn.Module, part: str, inputs: InputSpec | None) -> nn.Module:
    """``module`` (part ``part``), made to convert the contract's index labels to one-hot vectors where the contract
    says the model takes them so (:mod:`slimgen.models.labels`): the generator and the discriminator."""
    return labels_as(module, inputs) if inputs is not None and part in ("generator", "discriminator") else module


def _overrides(spec: PartSpec, module: nn.Module) -> dict[str, Any]:
    """What differs from a fresh build of ``spec``: ``shapes`` of tensors (layers changed by pruning) and,
    when kernels were cropped or channels pruned, the ``geometry`` no tensor records (convolutions' padding / output
    padding, the width of instance norms without tensors); when layers were
    factorized, their ``factorized`` records (the fresh build is compared after re-applying them)."""
    state = module.state_dict()
    factorized = records(module)
    built = restore_factorized(bake_to_match(build(spec.arch, spec.kwargs), set(state)), factorized)
    fresh = built.state_dict()
    out: dict[str, Any] = {"shapes": {k: list(v.shape) for k, v in state.items()
                                      if k in fresh and fresh[k].shape != v.shape}}
    geometry = geometry_overrides(module, built)
    if geometry:
        out["geometry"] = geometry
    if factorized:
        out["factorized"] = factorized
    return out


def save_folder(bundle: ModelBundle, path: str | Path, *, card: str | None = None,
                files: dict[str, Any] | None = None, keep: Sequence[str] = ()) -> Path:
    """Write ``bundle`` as the folder ``path``, replacing any folder there whole.

    Everything (config.json, model.safetensors, card.md, and ``files``: name -> JSON-able object
    or str) is written into a temporary sibling that is swapped in by one rename: a process
    killed at any moment leaves the old folder or the new one, never a mix. ``keep`` names
    entries of the old folder that move into the new one (a run's ``checkpoint``). The shipped
    zoo is never written.
    """
    from slimgen.models.zoo import is_shipped

    path = Path(path)
    if is_shipped(path):
        raise OutputError(f"{path}: is a shipped zoo model; slimgen never writes into the installed package")
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
        parts_cfg[name] = {"arch": spec.arch, "kwargs": spec.kwargs, **_overrides(spec, module),
                           **graph_config(module), **standard_config(module)}
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
    with atomic_folder(path, keep=keep) as tmp:
        save_file(stored, str(tmp / WEIGHTS), metadata={"format": "slimgen"})
        if bundle.calibration is not None:
            save_file(bundle.calibration.to_tensors(), str(tmp / CALIBRATION), metadata={"format": "slimgen"})
        _write_json(tmp / CONFIG, config)
        if card is not None:
            (tmp / CARD).write_text(card, encoding="utf-8")
        for name, obj in (files or {}).items():
            if isinstance(obj, str):
                (tmp / name).write_text(obj, encoding="utf-8")
            else:
                _write_json(tmp / name, obj)
    bundle.path = path
    return path


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelFolderError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFolderError(f"{path}: corrupt or truncated safetensors file ({' '.join(str(exc).split())})") from exc


def _load_part_state(module: nn.Module, state: dict[str, torch.Tensor], part: str, folder: Path) -> None:
    """Load ``state`` into ``module`` strictly: every tensor present, same shape, same dtype, finite."""
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
        if state[key].dtype != value.dtype:
            raise ModelFolderError(f"{folder}: tensor {full!r} is {str(state[key].dtype).removeprefix('torch.')} "
                                   f"but the architecture expects {str(value.dtype).removeprefix('torch.')} "
                                   "(slimgen does not cast weights)")
        if state[key].is_floating_point() and not bool(torch.isfinite(state[key]).all()):
            raise ModelFolderError(f"{folder}: tensor {full!r} holds NaN or infinite values")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ModelFolderError(f"{folder}: weights hold tensor {f'{part}.{extra[0]}'!r} that the architecture does not have")
    module.load_state_dict(state, strict=True)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def validate_config(config: Any, where: str | Path = CONFIG) -> dict[str, Any]:
    """Check the whole of a folder's config.json against its schema before anything is built.

    Returns ``config``; the first violation raises ModelFolderError naming the field, its value
    and what is allowed. Keys this version does not know are ignored (newer writers may add some).
    """
    def bad(field_: str, value: Any, allowed: str) -> ModelFolderError:
        return ModelFolderError(f"{where}: config.json field {field_} is {_show(value)}; allowed: {allowed}")

    if not isinstance(config, dict):
        raise bad("(root)", config, "a JSON object")
    version = config.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise bad("format_version", version, f"{FORMAT_VERSION} (the format this slimgen reads)")
    if config.get("kind") not in KINDS:
        raise bad("kind", config.get("kind"), ", ".join(KINDS))
    latent_dim = config.get("latent_dim")
    if latent_dim is not None and not (_is_int(latent_dim, 1) and latent_dim <= MAX_INPUT_ELEMENTS):
        raise bad("latent_dim", latent_dim, f"null or an integer from 1 to {MAX_INPUT_ELEMENTS:,}")
    shape = config.get("image_shape", [1, 28, 28])
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v, 1) for v in shape)
            and math.prod(shape) <= MAX_INPUT_ELEMENTS):
        raise bad("image_shape", shape, f"[channels, height, width], integers >= 1, at most {MAX_INPUT_ELEMENTS:,} "
                                        "values per image")
    parts = config.get("parts")
    if not isinstance(parts, dict) or not parts:
        raise bad("parts", parts, "a non-empty object {part name: {arch, kwargs, shapes}}")
    total = 0
    for name, pc in parts.items():
        if not isinstance(pc, dict):
            raise bad(f"parts.{name}", pc, "an object with 'arch', 'kwargs', 'shapes'")
        if "arch" not in pc:
            raise bad(f"parts.{name}.arch", None, "a registered architecture or 'module:Class'")
        try:
            check_arch(pc["arch"])
        except ModelFolderError:
            raise bad(f"parts.{name}.arch", pc["arch"], f"{', '.join(ARCHITECTURES)} or 'module:Class'") from None
        kwargs = pc.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise bad(f"parts.{name}.kwargs", kwargs, "an object of constructor arguments")
        shapes = pc.get("shapes", {})
        if not isinstance(shapes, dict):
            raise bad(f"parts.{name}.shapes", shapes, "an object {tensor name: [sizes]}")
        for key, dims in shapes.items():
            if not (isinstance(dims, list) and all(_is_int(d, 1) for d in dims)):
                raise bad(f"parts.{name}.shapes.{key}", dims, "a list of integers >= 1")
            total += math.prod(dims)
    tensors = config.get("tensors", {})
    if not isinstance(tensors, dict):
        raise bad("tensors", tensors, "an object {tensor name: {codec, shape, params}}")
    for name, meta in tensors.items():
        if not isinstance(meta, dict):
            raise bad(f"tensors.{name}", meta, "an object with 'codec', 'shape' and 'params'")
        if not any(name.startswith(f"{p}.") for p in parts):
            raise bad(f"tensors.{name}", name, f"names of a part's tensors ({', '.join(f'{p}.*' for p in parts)})")
        if meta.get("codec") not in CODECS:
            raise bad(f"tensors.{name}.codec", meta.get("codec"), ", ".join(sorted(CODECS)))
        dims = meta.get("shape")
        if not (isinstance(dims, list) and all(_is_int(d, 0) for d in dims)):
            raise bad(f"tensors.{name}.shape", dims, "a list of integers >= 0")
        total += math.prod(dims)
        if not isinstance(meta.get("params", {}), dict):
            raise bad(f"tensors.{name}.params", meta.get("params"), "an object of the codec's parameters")
    if total > MAX_ELEMENTS:
        raise bad("shapes", f"{total:,} elements", f"at most {MAX_ELEMENTS:,} tensor elements per model")
    if not isinstance(config.get("steps", []), list) or not all(isinstance(x, dict) for x in config.get("steps", [])):
        raise bad("steps", config.get("steps"), "a list of objects")
    if not isinstance(config.get("meta", {}), dict):
        raise bad("meta", config.get("meta"), "an object")
    if config.get("inputs") is not None:
        try:
            spec = InputSpec.from_dict(config["inputs"])
        except (ConfigError, TypeError, ValueError) as exc:
            raise ModelFolderError(f"{where}: config.json field inputs: {' '.join(str(exc).split())}") from exc
        if spec.latent_numel > MAX_INPUT_ELEMENTS:
            raise bad("inputs.latent_shape", list(spec.latent_shape), f"at most {MAX_INPUT_ELEMENTS:,} values per latent")
    return config


def _decode(name: str, raw: dict[str, torch.Tensor], meta: dict[str, Any], folder: Path) -> torch.Tensor:
    try:
        return decode_tensor(name, raw, meta)
    except ModelFolderError as exc:
        raise ModelFolderError(f"{folder}: {exc}") from exc
    except Exception as exc:  # a codec meeting metadata or stored tensors it cannot decode
        detail = f"missing {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise ModelFolderError(f"{folder}: tensor {name!r} cannot be decoded with codec {meta.get('codec')!r} "
                               f"({type(exc).__name__}: {detail})") from exc


def load_folder(path: str | Path, *, trust_code: Iterable[str] | bool = ()) -> ModelBundle:
    """Rebuild the model in folder ``path`` (or ``zoo:NAME``) exactly, in eval mode.

    config.json is validated whole first; a part whose architecture is a user's ``module:Class``
    is imported only if trusted (``trust_code``, :func:`slimgen.models.trust_code`, or already
    imported). Weights must match the architecture in name, shape and dtype, and be finite.
    """
    from slimgen.models.zoo import resolve_model_path

    folder = resolve_model_path(path)
    config = validate_config(read_json(folder / CONFIG), folder)
    parts_cfg, kind = config["parts"], config["kind"]
    for name, pc in parts_cfg.items():  # refuse untrusted code before reading any weights
        try:
            resolve(pc["arch"], trust_code=trust_code)
        except ModelFolderError as exc:
            raise type(exc)(f"{folder}: config.json part {name!r}: {exc}") from exc
    raw = _load_weights(folder / WEIGHTS)
    tensors_meta: dict[str, Any] = config.get("tensors", {})
    decoded = dict(raw)
    for name, meta in tensors_meta.items():
        decoded = {k: v for k, v in decoded.items() if not k.startswith(name + ".__")}
        decoded[name] = _decode(name, raw, meta, folder)
    orphans = sorted(k for k in decoded if not any(k.startswith(f"{p}.") for p in parts_cfg))
    if orphans:
        raise ModelFolderError(f"{folder}: {WEIGHTS} holds tensor {orphans[0]!r} that belongs to no part "
                               f"(parts: {', '.join(parts_cfg)})")
    parts: dict[str, nn.Module] = {}
    specs: dict[str, PartSpec] = {}
    inputs = None if config.get("inputs") is None else InputSpec.from_dict(config["inputs"])
    for name, pc in parts_cfg.items():
        spec = PartSpec(pc["arch"], dict(pc.get("kwargs", {})))
        try:
            module = build(spec.arch, spec.kwargs, trust_code=trust_code)
        except ModelFolderError as exc:
            raise type(exc)(f"{folder}: config.json part {name!r}: {exc}") from exc
        labelled(module, name, inputs)  # before a recorded graph is traced again: it holds the conversion
        prefix = f"{name}."  # saved baked? (import and pruning bake spectral / weight norm)
        bake_to_match(module, {k[len(prefix):] for k in decoded if k.startswith(prefix)})
        try:
            module = restore_part(module, pc)  # the recorded graph rewrite (if any), then the pruned shapes
        except ModelFolderError as exc:
            raise ModelFolderError(f"{folder}: part {name!r}: {exc}") from exc
        except Exception as exc:  # a shape for a submodule that does not exist, or one the layer cannot take
            raise ModelFolderError(f"{folder}: config.json fields parts.{name}.shapes/graph cannot be applied "
                                   f"({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
        _load_part_state(module, {k[len(prefix):]: v for k, v in decoded.items() if k.startswith(prefix)}, name, folder)
        parts[name], specs[name] = module.eval(), spec
    encodings = {n: Encoding(m["codec"], m.get("params", {})) for n, m in tensors_meta.items()}
    return ModelBundle(
        inputs=inputs,
        kind=kind, parts=parts, specs=specs, latent_dim=config.get("latent_dim"),
        image_shape=tuple(config.get("image_shape", (1, 28, 28))), steps=list(config.get("steps", [])),
        encodings=encodings, meta=dict(config.get("meta", {})), path=folder,
        calibration=GenInputs.from_tensors(_load_weights(folder / CALIBRATION)) if (folder / CALIBRATION).is_file() else None,
    )


def import_checkpoint(
    weights: str | Path, arch: str, kwargs: dict[str, Any], *, latent_dim: int,
    image_shape: tuple[int, int, int], trust_pickle: bool = False,
) -> ModelBundle:
    """Wrap a user's generator (``module:Class`` + kwargs + a .safetensors/.pt state dict) as a GAN bundle."""
    weights = Path(weights)
    module = build(arch, kwargs, trust_code=[arch])  # the caller named this class: it is their choice
    if weights.suffix == ".safetensors":
        state = _load_weights(weights)
    else:
        state = load_pickle_checkpoint(weights, trust_pickle=trust_pickle, trust_hint="trust_pickle=True")
        if isinstance(state, nn.Module):
            state = state.state_dict()
        if not isinstance(state, dict):
            raise ModelFolderError(f"{weights}: expected a state dict, found {type(state).__name__}")
    _load_part_state(module, state, "generator", weights)
    bake_parametrizations(module)
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
    """Copy the folder ``src`` to ``dst``, replacing any folder there whole (one rename)."""
    with atomic_folder(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)

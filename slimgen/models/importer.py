"""Import a generator trained elsewhere: ``module:Class`` + kwargs + a weights file -> a model bundle.

``import_model`` reads ``.safetensors``, or ``.pt`` / ``.pth`` / ``.tar`` with
``torch.load(weights_only=True)`` (nothing is unpickled beyond tensors and containers), picks the
state dict inside a checkpoint dict (``--key netG_state_dict``), strips DataParallel's
``module.`` prefix, builds the class and loads the weights strictly. The input contract is
given (``latent_shape``) or read off the first layer (Linear in_features; Conv/ConvTranspose
in_channels on a 1x1 input, less a label embedding's size for a class-conditional model), then
checked by one forward pass, which also finds the image shape and checks the output is one
tensor (B, C, H, W) in the images' range (``--image-range``; else [0, 1] after a final sigmoid, [-1, 1]
after a tanh or anything else). Every failure is one :class:`ModelFolderError` line.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.io import load_pickle_checkpoint
from slimgen.models.folder import ModelBundle, PartSpec
from slimgen.models.inputs import DEFAULT_RANGE, LABELS, InputSpec
from slimgen.models.labels import labels_as
from slimgen.models.registry import build
from slimgen.models.standard import standardize
from slimgen.models.surgery import bake_parametrizations, users_layer

PICKLE_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt", ".bin")
RANGE_TOLERANCE = 1e-3  # outputs may exceed [-1, 1] by rounding only
PROBE_N = 16


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_weights(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """The object stored in ``path``: a dict of tensors (safetensors) or whatever the checkpoint holds."""
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFolderError(f"{path}: corrupt or truncated safetensors file ({exc})") from exc
    if path.suffix not in PICKLE_SUFFIXES:
        raise ModelFolderError(f"{path}: weights must be .safetensors or one of {', '.join(PICKLE_SUFFIXES)}")
    return load_pickle_checkpoint(path, trust_pickle=trust_pickle)


def pick_state_dict(obj: Any, key: str | None, *, where: str) -> dict[str, torch.Tensor]:
    """The state dict in ``obj`` (under ``key`` when given), ``module.`` (DDP) and ``_orig_mod.``
    (``torch.compile``) prefixes removed, in that order (a compiled DDP model has both)."""
    if key is not None:
        if not isinstance(obj, dict):
            raise ModelFolderError(f"{where}: --key {key!r} given, but the file holds a {type(obj).__name__}, not a dict")
        if key not in obj:
            raise ModelFolderError(f"{where}: no key {key!r}; the checkpoint has: {', '.join(map(str, obj)) or 'nothing'}")
        obj = obj[key]
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not _is_state_dict(obj):
        if isinstance(obj, dict):
            dicts = [str(k) for k, v in obj.items() if _is_state_dict(v)]
            hint = f"pick one with --key ({', '.join(dicts)})" if dicts else f"its keys: {', '.join(map(str, obj))}"
            raise ModelFolderError(f"{where}: {'key ' + repr(key) + ' is' if key else 'this is'} a checkpoint dict, "
                                   f"not a state dict of tensors; {hint}")
        raise ModelFolderError(f"{where}: expected a state dict of tensors, found {type(obj).__name__}")
    for wrapper in ("module.", "_orig_mod."):  # saved from DataParallel / DDP, from torch.compile's wrapper
        if obj and all(k.startswith(wrapper) for k in obj):
            obj = {k[len(wrapper):]: v for k, v in obj.items()}
    return obj


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], *, where: str, arch: str,
                kwargs: dict[str, Any]) -> None:
    """Load ``state`` into ``module``; a missing, extra or differently shaped tensor is one error line."""
    expected = module.state_dict()
    built = f"{arch} built with {kwargs or 'no kwargs'}"
    for name, value in expected.items():
        if name not in state:
            raise ModelFolderError(f"{where}: the weights lack tensor {name!r} that {built} has: do the kwargs match?")
        if tuple(state[name].shape) != tuple(value.shape):
            raise ModelFolderError(f"{where}: tensor {name!r} has shape {list(state[name].shape)} in the weights but "
                                   f"{list(value.shape)} in {built}: the kwargs do not match the weights")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ModelFolderError(f"{where}: the weights hold tensor {extra[0]!r} that {built} does not have")
    module.load_state_dict(state, strict=True)


def _first_layer(module: nn.Module) -> nn.Module | None:
    """The first Linear or Conv/ConvT, or hand-written linear layer (a module of the model's own classes holding a
    2-D ``weight`` (out, in), as StyleGAN2's equalized-learning-rate ``EqualLinear``), in registration order."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd):
            return m
        w = m._parameters.get("weight")
        if w is not None and w.ndim == 2 and users_layer(m):
            return m
    return None


def _contracts(shape: tuple[int, ...], given: bool, num_classes: int | None, labels: str | None
               ) -> list[tuple[tuple[int, ...], str]]:
    """(latent shape, labels) contracts to probe, in order: the given or inferred shape (and, inferred (nz, 1, 1), the
    flat (nz,) of a forward that lifts z itself); for a conditional model whose label form is not given, each also
    with one-hot labels, and an inferred flat width less num_classes (a first Linear reading [z, one_hot(y)])."""
    shapes = [shape] if given or len(shape) == 1 else [shape, shape[:1]]
    forms = [labels] if labels is not None else ["index", "one_hot"] if num_classes is not None else ["index"]
    tries = [(s, f) for f in forms for s in shapes]
    if "one_hot" in forms and not given and len(shape) == 1 and num_classes is not None and shape[0] > num_classes:
        tries.append(((shape[0] - num_classes,), "one_hot"))
    return tries


def infer_latent_shape(generator: nn.Module, num_classes: int | None) -> tuple[int, ...] | None:
    """The latent shape the first layer tells, or None: Linear (or a hand-written one) -> (in,), Conv/ConvT ->
    (in, 1, 1).

    For a class-conditional model with an ``nn.Embedding(num_classes, d)`` whose output is
    concatenated to the latent, the first layer reads latent + d features: d is subtracted (the import also tries
    the whole width, for a model that feeds the embedding in later, e.g. as channels beside the reshaped latent).
    """
    layer = _first_layer(generator)
    if layer is None or _size_keeping(layer):
        return None
    conv = isinstance(layer, nn.modules.conv._ConvNd)
    width = layer.in_channels if conv else layer.in_features if isinstance(layer, nn.Linear) else layer.weight.shape[1]
    if num_classes is not None:
        embeddings = [m for m in generator.modules() if isinstance(m, nn.Embedding) and m.num_embeddings == num_classes]
        if len(embeddings) == 1:
            width -= embeddings[0].embedding_dim
    if width < 1:
        return None
    return (width, 1, 1) if conv else (width,)


def _size_keeping(layer: nn.Module) -> bool:
    """Is ``layer`` a convolution with a kernel over 1 that keeps its input's size ("same" padding)? A first layer
    like that reads latents of any spatial size (a fully convolutional generator: a VAE decoder, an image-to-image
    net), so (C, 1, 1) would be a guess: the latent is not read off it."""
    if not isinstance(layer, nn.Conv2d) or max(layer.kernel_size) <= 1 or max(layer.stride) != 1:
        return False
    if layer.padding == "same":
        return True
    return all(p == d * (k - 1) // 2 for p, d, k in zip(layer.padding, layer.dilation, layer.kernel_size, strict=True))


class ForwardFailed(ModelFolderError):
    """The generator's forward raised on the inputs of a contract (not: it ran and returned unusable images)."""


def probe_generator(generator: nn.Module, spec: InputSpec, *, where: str, image_range: tuple[float, float] | None
                    ) -> tuple[tuple[int, int, int], InputSpec, tuple[float, float]]:
    """One forward pass on ``PROBE_N`` inputs: (C, H, W) of the images, ``spec`` with the images' range (the
    given ``image_range``, else what :func:`detect_range` reads off the last operation, else [-1, 1]) and the
    (min, max) of the raw outputs; one error line if the output is unusable (outside [-1, 1] with no range
    given or told)."""
    inputs = spec.draw(PROBE_N, seed=0)
    try:
        with torch.enable_grad():  # the output's autograd node names the last operation (tanh, sigmoid)
            out = generator.eval()(*inputs.args())  # raw: the range is checked here, not mapped
    except Exception as exc:  # the user's forward: any failure means the contract is wrong
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ForwardFailed(f"{where}: the generator fails on inputs {spec.describe()} ({first}); "
                               "give the right --latent-shape / --num-classes") from exc
    if not isinstance(out, torch.Tensor):
        raise ModelFolderError(f"{where}: the generator returns a {type(out).__name__}, not one tensor (B, C, H, W); "
                               "wrap it so that forward returns the images only")
    if out.ndim != 4 or out.shape[0] != PROBE_N:
        raise ModelFolderError(f"{where}: the generator returns shape {tuple(out.shape)} for {PROBE_N} inputs; "
                               "slimgen needs images (B, C, H, W)")
    told = image_range or detect_range(out)
    out = out.detach()
    if not torch.isfinite(out).all():
        raise ModelFolderError(f"{where}: the generator outputs NaN or Inf on {spec.describe()}")
    lo, hi = float(out.min()), float(out.max())
    if told is None and (lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE):
        raise ModelFolderError(
            f"{where}: the generator's outputs lie in [{lo:.3g}, {hi:.3g}], not in [-1, 1]; give the range its images "
            "were trained in with --image-range LO,HI (e.g. -1,1 for a linear output that is clamped for display, "
            "as ProGAN and StyleGAN do; 0,255 for pixel values)")
    shape = (int(out.shape[1]), int(out.shape[2]), int(out.shape[3]))
    return shape, replace(spec, image_range=told or DEFAULT_RANGE), (lo, hi)


def detect_range(out: torch.Tensor) -> tuple[float, float] | None:
    """The ``image_range`` the generator's last operation tells (``out`` carries its autograd graph): a sigmoid
    (module or function) -> [0, 1], a tanh or hardtanh -> [-1, 1]; None for anything else."""
    name = type(out.grad_fn).__name__ if out.grad_fn is not None else ""
    if name.startswith(("SigmoidBackward", "HardsigmoidBackward")):
        return (0.0, 1.0)
    if name.startswith(("TanhBackward", "HardtanhBackward")):
        return DEFAULT_RANGE
    return None


def _load_part(weights: str | Path, arch: str, kwargs: dict[str, Any] | None, key: str | None, *,
               trust_pickle: bool) -> nn.Module:
    kwargs = dict(kwargs or {})
    where = str(weights)
    state = pick_state_dict(read_weights(weights, trust_pickle=trust_pickle), key, where=where)
    module = build(arch, kwargs, trust_code=[arch])  # the user named this class: their choice
    load_strict(module, state, where=where, arch=arch, kwargs=kwargs)
    bake_parametrizations(module)  # spectral / weight norm -> the plain weights they compute (eval mode)
    return module.eval()


@torch.no_grad()
def _check_discriminator(discriminator: nn.Module, image_shape: tuple[int, int, int], *, where: str,
                         conditional: bool = False) -> None:
    """Two blank images (and labels 0 for a class-conditional model, ``D(x, y)``) must give one logit each."""
    labels = (torch.zeros(2, dtype=torch.long),) if conditional else ()
    try:
        out = discriminator.eval()(torch.zeros(2, *image_shape), *labels)
    except Exception as exc:  # the user's forward
        called = f"D(x, y) with images of shape {image_shape} (C, H, W) and int64 labels" if conditional else \
            f"images of shape {image_shape} (C, H, W)"
        raise ModelFolderError(f"{where}: the discriminator fails on {called} "
                               f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    if not isinstance(out, torch.Tensor) or out.shape[0] != 2 or out[0].numel() != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelFolderError(f"{where}: the discriminator returns {shape} for 2 images; slimgen needs one logit "
                               "per image ((B,) or (B, 1, ...))")


def _embedding_classes(generator: nn.Module) -> tuple[str, int] | None:
    """(what, rows) of the generator's label tables: its ``nn.Embedding`` modules when they all have the same number
    of rows (one table, or one per conditional norm as in BigGAN / SAGAN), ``what`` naming them; None otherwise."""
    found = [(n, m.num_embeddings) for n, m in generator.named_modules() if isinstance(m, nn.Embedding)]
    if not found or len({rows for _, rows in found}) != 1 or found[0][1] < 2:
        return None
    if len(found) == 1:
        return f"nn.Embedding {found[0][0]}", found[0][1]
    return f"{len(found)} nn.Embedding of {found[0][1]} rows ({found[0][0]}, ...)", found[0][1]


def _probe_contracts(generator: nn.Module, weights: str | Path, latent_shape: tuple[int, ...] | None,
                     num_classes: int | None, labels: str | None, distribution: Any, truncation: Any,
                     image_range: tuple[float, float] | None) -> tuple[tuple[int, int, int], InputSpec, tuple[float, float]]:
    """:func:`probe_generator` on the first contract :func:`_contracts` lists that runs (the labels converted as it
    says); one error line naming every contract tried when none does."""
    given = latent_shape is not None
    if latent_shape is None:
        latent_shape = infer_latent_shape(generator, num_classes)
        if latent_shape is None:
            first = _first_layer(generator)
            if first is not None and _size_keeping(first):
                k = "x".join(map(str, first.kernel_size))
                raise ModelFolderError(f"{weights}: its first layer, a {k} convolution of {first.in_channels} channels "
                                       "keeping its input's size, takes latents of any height and width (a fully "
                                       f"convolutional generator): give --latent-shape {first.in_channels},H,W")
            raise ModelFolderError(f"{weights}: cannot tell the latent shape from the first layer; give --latent-shape")
    tries = _contracts(tuple(latent_shape), given, num_classes, labels)
    whole = None if given else infer_latent_shape(generator, None)
    if whole is not None and whole != tuple(latent_shape):  # the label embedding goes elsewhere, not into that layer
        tries += [t for t in _contracts(whole, False, num_classes, labels) if t not in tries]
    for i, (shape, taken) in enumerate(tries):
        spec = InputSpec(shape, distribution, truncation, num_classes, labels=taken)  # type: ignore[arg-type]
        labels_as(generator, spec)
        try:
            return probe_generator(generator, spec, where=str(weights), image_range=image_range)
        except ForwardFailed:
            if len(tries) == 1:
                raise
            if i == len(tries) - 1:
                said = ", ".join(f"{t}" + (" with one-hot labels" if lab == "one_hot" else "") for t, lab in tries)
                raise ForwardFailed(f"{weights}: the generator fails on latents of shape {said}; give the right "
                                    "--latent-shape / --num-classes / --labels") from None
    raise AssertionError("unreachable: _contracts lists at least one contract")


def import_model(
    weights: str | Path, arch: str, *, kwargs: dict[str, Any] | None = None, key: str | None = None,
    latent_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
    distribution: str = "normal", truncation: float | None = None,
    image_range: tuple[float, float] | None = None, discriminator: str | Path | None = None, discriminator_arch: str | None = None,
    discriminator_kwargs: dict[str, Any] | None = None, discriminator_key: str | None = None,
    trust_pickle: bool = False, labels: str | None = None,
) -> ModelBundle:
    """A GAN bundle of a user's generator (and optionally discriminator); see the module docstring.

    ``arch``: a registry name or ``module:Class`` (the user chose to import that code).
    ``latent_shape``: one sample's latent shape without the batch, e.g. ``(100, 1, 1)``;
    inferred from the first layer when None (a first Conv/ConvT's ``(in, 1, 1)``, else ``(in,)``
    when the forward lifts a flat latent itself). ``num_classes``: the generator is ``G(z, y)``
    with int64 labels y (B,) in [0, num_classes); ``labels``: how its forward takes them, ``index`` or ``one_hot``
    (float (B, num_classes); the folder's parts then convert slimgen's indices themselves, :mod:`slimgen.models.labels`),
    None: tried in that order. ``image_range``: the (lo, hi) the generator's images
    were trained in (its discriminator reads them so); None: what the last operation tells (sigmoid
    [0, 1], tanh [-1, 1], :func:`detect_range`), else [-1, 1], and outputs outside it are an error.
    """
    if (discriminator is None) != (discriminator_arch is None):
        raise ConfigError("give both the discriminator's weights and its --discriminator-arch, or neither")
    generator = _load_part(weights, arch, kwargs, key, trust_pickle=trust_pickle)
    if labels is not None and labels not in LABELS:
        raise ConfigError(f"labels must be one of {', '.join(LABELS)}, got {labels!r}")
    if labels == "one_hot" and num_classes is None:
        raise ConfigError("--labels one-hot needs --num-classes")
    try:
        image_shape, spec, seen = _probe_contracts(generator, weights, latent_shape, num_classes, labels,
                                                   distribution, truncation, image_range)
        read_classes = None
    except ForwardFailed:
        read_classes = _embedding_classes(generator) if num_classes is None and labels is None else None
        if read_classes is None:
            raise
        try:  # a class-conditional generator imported without --num-classes: its one nn.Embedding tells it
            image_shape, spec, seen = _probe_contracts(generator, weights, latent_shape, read_classes[1], labels,
                                                       distribution, truncation, image_range)
        except ForwardFailed:
            raise ForwardFailed(f"{weights}: the generator fails on the latents tried, also as G(z, y) with the "
                                   f"{read_classes[1]} classes of its {read_classes[0]}; give the "
                                   "right --latent-shape / --num-classes / --labels") from None
    draw = spec.draw(PROBE_N, seed=0)
    standardize(generator, lambda g: g(*draw.args()))  # equalized-lr leaves -> the nn.Conv2d/Linear they compute
    parts: dict[str, nn.Module] = {"generator": generator}
    specs = {"generator": PartSpec(arch, dict(kwargs or {}))}
    if discriminator is not None and discriminator_arch is not None:
        d = _load_part(discriminator, discriminator_arch, discriminator_kwargs, discriminator_key,
                       trust_pickle=trust_pickle)
        labels_as(d, spec)  # a one-hot generator's critic takes its labels one-hot too
        _check_discriminator(d, image_shape, where=str(discriminator), conditional=spec.conditional)
        with torch.no_grad():
            fakes = generator.eval()(*draw.args())  # images in the model's own range, what D reads
        standardize(d, lambda m: m(fakes, *(() if draw.y is None else (draw.y,))))
        parts["discriminator"] = d
        specs["discriminator"] = PartSpec(discriminator_arch, dict(discriminator_kwargs or {}))
    step = {"step": "import", "weights": str(weights), "key": key, "inputs": spec.to_dict(),
            "probe_range": [round(seen[0], 6), round(seen[1], 6)], "image_range_given": image_range is not None,
            "discriminator": None if discriminator is None else str(discriminator),
            "num_classes_from": None if read_classes is None else read_classes[0],
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    return ModelBundle(kind="gan", parts=parts, specs=specs, inputs=spec, image_shape=image_shape, steps=[step])

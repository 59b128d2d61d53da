"""Architectures by name; a user's own model is ``module:Class`` with JSON kwargs."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from slimgen.errors import ModelFolderError
from slimgen.models.classifier import ImageClassifier, ResidualClassifier
from slimgen.models.dcgan import DCGANDiscriminator, DCGANGenerator
from slimgen.models.vae import VAEDecoder, VAEEncoder

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "dcgan_generator": DCGANGenerator,
    "dcgan_discriminator": DCGANDiscriminator,
    "vae_encoder": VAEEncoder,
    "vae_decoder": VAEDecoder,
    "classifier": ImageClassifier,
    "classifier_resnet": ResidualClassifier,
}


def architecture_name(module: nn.Module) -> str:
    """The registry name of ``module``'s class, or ``module:Class`` for a user's class."""
    for name, cls in ARCHITECTURES.items():
        if type(module) is cls:
            return name
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve(arch: str) -> type[nn.Module]:
    """The class for a registry name or a ``module:Class`` path."""
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    if ":" not in arch:
        raise ModelFolderError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)} or 'module:Class'")
    mod_name, _, cls_name = arch.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelFolderError(f"architecture {arch!r}: cannot import module {mod_name!r} ({exc})") from exc
    for part in cls_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelFolderError(f"architecture {arch!r}: module {mod_name!r} has no {cls_name!r}")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ModelFolderError(f"architecture {arch!r} is not an nn.Module class")
    return obj


def build(arch: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    cls = resolve(arch)
    try:
        return cls(**(kwargs or {}))
    except (TypeError, ValueError) as exc:
        raise ModelFolderError(f"cannot build {arch} with {kwargs}: {exc}") from exc

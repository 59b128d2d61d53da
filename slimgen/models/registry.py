"""Architectures by name; a user's own model is ``module:Class`` with JSON kwargs.

A model folder is untrusted input: it may name a registered architecture, but a ``module:Class``
it names is imported only when the user chose that code: on the command line
(``slimgen --trust-code module:Class ...``), in Python (:func:`trust_code`, or
``load_folder(..., trust_code=...)``), or by having imported the module already. Nothing is
imported before that check.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimgen.errors import ModelFolderError, UntrustedCodeError
from slimgen.models.cdcgan import ConditionalDCGANDiscriminator, ConditionalDCGANGenerator
from slimgen.models.classifier import ImageClassifier, ResidualClassifier
from slimgen.models.dcgan import DCGANDiscriminator, DCGANGenerator
from slimgen.models.sd_vae import SDVAEDecoder
from slimgen.models.vae import VAEDecoder, VAEEncoder

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "dcgan_generator": DCGANGenerator,
    "dcgan_discriminator": DCGANDiscriminator,
    "vae_encoder": VAEEncoder,
    "vae_decoder": VAEDecoder,
    "classifier": ImageClassifier,
    "cdcgan_generator": ConditionalDCGANGenerator,
    "cdcgan_discriminator": ConditionalDCGANDiscriminator,
    "sd_vae_decoder": SDVAEDecoder,  # diffusers AutoencoderKL's decoder; imports diffusers only when built
    "classifier_resnet": ResidualClassifier,
}

#: A user's class: a dotted module path, a colon, a (dotted) class name.
USER_ARCH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
#: Most tensor elements one model may declare (4 Gi float32 bytes): a folder cannot make slimgen allocate more.
MAX_ELEMENTS = 2**30

_TRUSTED: set[str] = set()


def trust_code(*archs: str) -> None:
    """Allow this process to import each ``module:Class`` (or a whole ``module:*``) that a folder names."""
    for arch in archs:
        if not (USER_ARCH.match(arch) or re.match(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:\*$", arch)):
            raise ModelFolderError(f"--trust-code {arch!r}: expected 'module:Class' (or 'module:*')")
        _TRUSTED.add(arch)


def _is_trusted(arch: str, extra: Iterable[str] | bool) -> bool:
    if extra is True:
        return True
    names = _TRUSTED | set(extra or ())
    if arch.startswith("slimgen."):  # slimgen's own installed modules (python -m slimgen drops the cwd from sys.path)
        return True
    return arch in names or f"{arch.partition(':')[0]}:*" in names


def architecture_name(module: nn.Module) -> str:
    """The registry name of ``module``'s class, or ``module:Class`` for a user's class."""
    for name, cls in ARCHITECTURES.items():
        if type(module) is cls:
            return name
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def check_arch(arch: Any) -> str:
    """``arch`` if it is a registered name or well-formed ``module:Class``; else ModelFolderError (nothing imported)."""
    if isinstance(arch, str) and (arch in ARCHITECTURES or USER_ARCH.match(arch)):
        return arch
    raise ModelFolderError(f"architecture {arch!r}: allowed: {', '.join(ARCHITECTURES)}, or 'module:Class' "
                           "(a user's class, imported only with --trust-code)")


def _import_user_module(mod_name: str) -> Any:
    """Import a module the user chose; the current directory is searched last (its own code, not a shadow)."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(mod_name)
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def resolve(arch: str, *, trust_code: Iterable[str] | bool = ()) -> type[nn.Module]:
    """The class for a registry name or a ``module:Class`` path.

    A ``module:Class`` whose module is not imported yet is imported only if it is trusted
    (:func:`trust_code`, or listed in ``trust_code``; ``True`` trusts every name); otherwise
    :class:`UntrustedCodeError` says what would be imported and how to allow it.
    """
    check_arch(arch)
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    mod_name, _, cls_name = arch.partition(":")
    obj: Any = sys.modules.get(mod_name)
    if obj is None:
        if not _is_trusted(arch, trust_code):
            raise UntrustedCodeError(
                f"architecture {arch!r} is a user's class: loading it would import and run module {mod_name!r}; "
                f"slimgen never imports code a model folder names. If you trust that code, pass "
                f"'slimgen --trust-code {arch} COMMAND ...' (Python: slimgen.models.trust_code({arch!r}), "
                "or import the module before loading)")
        try:
            obj = _import_user_module(mod_name)
        except ImportError as exc:
            raise ModelFolderError(f"architecture {arch!r}: cannot import module {mod_name!r} ({exc})") from exc
        except Exception as exc:  # the user's trusted module failed while importing
            raise ModelFolderError(f"architecture {arch!r}: importing {mod_name!r} failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
    for part in cls_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelFolderError(f"architecture {arch!r}: module {mod_name!r} has no {cls_name!r}")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ModelFolderError(f"architecture {arch!r} is not an nn.Module class")
    return obj


def _numel(module: nn.Module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


def build(arch: str, kwargs: dict[str, Any] | None = None, *, trust_code: Iterable[str] | bool = ()) -> nn.Module:
    """Construct ``arch`` with ``kwargs``; a registered architecture is first built on the meta device
    and refused if it would hold more than :data:`MAX_ELEMENTS` tensor elements."""
    cls = resolve(arch, trust_code=trust_code)
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ModelFolderError(f"cannot build {arch}: kwargs must be a mapping of names to values, got {kwargs!r}")
    try:
        if arch in ARCHITECTURES:
            with torch.device("meta"):
                size = _numel(cls(**kwargs))
            if size > MAX_ELEMENTS:
                raise ModelFolderError(f"cannot build {arch} with {kwargs}: {size:,} tensor elements; at most "
                                       f"{MAX_ELEMENTS:,} allowed")
        return cls(**kwargs)
    except ModelFolderError:
        raise
    except MemoryError as exc:
        raise ModelFolderError(f"cannot build {arch} with {kwargs}: out of memory") from exc
    except Exception as exc:  # constructors reject bad kwargs with TypeError, ValueError, RuntimeError, ...
        msg = " ".join(str(exc).split())
        raise ModelFolderError(f"cannot build {arch} with {kwargs}: {type(exc).__name__}: {msg}") from exc

"""Feature extractors: the spaces in which quality metrics compare image sets.

Every extractor is an ``nn.Module`` usable as torchmetrics' ``feature=`` module with
``normalize=True``: it maps float images (N, C, H, W) in [0, 1] to features (N, num_features).
``logits(features)`` gives class logits (N, K) for the Inception-Score-style metrics.

Two extractors ship: the Fashion-MNIST classifier that slimgen trains itself (the default)
and the standard FID Inception v3, whose weights must be on disk (nothing is downloaded).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.evaluate.inception import FID_WEIGHTS_FILE, FIDInceptionV3

DEFAULT_EXTRACTOR = "zoo:fmnist-classifier"


def state_hash(module: nn.Module) -> str:
    """First 16 hex digits of the SHA-256 of a module's state dict (names, shapes, bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureExtractor(nn.Module):
    """Base: images (N, C, H, W) in [0, 1] -> features (N, num_features).

    ``name`` and ``weights_hash`` identify the feature space in results and cache keys;
    ``input_shape`` is the (C, H, W) the extractor accepts, or None for any size.
    """

    name: str
    num_features: int
    weights_hash: str
    input_shape: tuple[int, int, int] | None = None
    class_names: tuple[str, ...] | None = None

    def logits(self, features: torch.Tensor) -> torch.Tensor | None:
        """Class logits (N, K) from features (N, num_features), or None if the extractor has no head."""
        return None

    def check_input(self, image_shape: tuple[int, int, int], what: str) -> None:
        """Raise ConfigError if images of ``image_shape`` (C, H, W) cannot go through this extractor."""
        if self.input_shape is not None and tuple(image_shape) != tuple(self.input_shape):
            raise ConfigError(
                f"{what} has images of shape {tuple(image_shape)} (C, H, W) but the feature extractor "
                f"{self.name} takes {tuple(self.input_shape)}; use --inception-weights for other image sizes"
            )


class ClassifierFeatures(FeatureExtractor):
    """Penultimate features (N, feature_dim) of an :class:`ImageClassifier` trained on [-1, 1] images."""

    def __init__(self, classifier: nn.Module, *, name: str, input_shape: tuple[int, int, int],
                 class_names: Iterable[str] = ()) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.name = name
        self.num_features = int(classifier.feature_dim)
        self.input_shape = tuple(input_shape)  # type: ignore[assignment]
        self.class_names = tuple(class_names) or None
        self.weights_hash = state_hash(classifier)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float() * 2 - 1)  # (N, feature_dim)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier.head(features)  # (N, num_classes)


class InceptionFeatures(FeatureExtractor):
    """Standard FID features: pool3 (N, 2048) of the TF-ported Inception v3 at 299x299.

    Gray images are repeated to 3 channels; images are resized bilinearly to 299x299.
    """

    def __init__(self, network: FIDInceptionV3, *, weights_hash: str | None = None) -> None:
        super().__init__()
        self.network = network.eval()
        self.name = "inception-v3-fid"
        self.num_features = 2048
        self.weights_hash = weights_hash or state_hash(network)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (N, 3, H, W)
        x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.network.pool3(x * 2 - 1)  # (N, 2048)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.network.fc(features)  # (N, 1008)


def inception_weight_candidates() -> list[Path]:
    """Where torch hub keeps pytorch-fid's weights file: ``torch.hub.get_dir()``, then ``~/.cache/torch/hub``."""
    dirs = [Path(torch.hub.get_dir()), Path.home() / ".cache" / "torch" / "hub"]
    return list(dict.fromkeys(d / "checkpoints" / FID_WEIGHTS_FILE for d in dirs))


def load_inception(weights: str | Path | None = None) -> InceptionFeatures:
    """Inception features from a local pytorch-fid weights file (``pt_inception-2015-12-05-*.pth``).

    Without ``weights``, the torch hub cache locations are tried.
    """
    from slimgen.io import load_pickle_checkpoint

    candidates = [Path(weights)] if weights is not None else inception_weight_candidates()
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ModelFolderError(
            f"Inception weights file not found (looked for {', '.join(map(str, candidates))}). slimgen cannot "
            f"download it; pass --inception-weights PATH to pytorch-fid's {FID_WEIGHTS_FILE}"
        )
    state = load_pickle_checkpoint(path)
    if not isinstance(state, dict):
        raise ModelFolderError(f"{path}: expected an Inception v3 state dict, found {type(state).__name__}")
    network = FIDInceptionV3()
    network.load_fid_state_dict(state, source=str(path))
    return InceptionFeatures(network)


def load_classifier_features(spec: str | Path = DEFAULT_EXTRACTOR) -> ClassifierFeatures:
    """Features of a classifier model folder (``zoo:fmnist-classifier`` by default)."""
    from slimgen.models import load_folder

    bundle = load_folder(spec)
    if bundle.kind != "classifier" or "classifier" not in bundle.parts:
        raise ModelFolderError(f"{spec}: not a classifier model folder (kind {bundle.kind!r})")
    name = str(spec)[4:] if str(spec).startswith("zoo:") else Path(spec).name
    return ClassifierFeatures(bundle.parts["classifier"], name=name, input_shape=bundle.image_shape,
                              class_names=bundle.meta.get("class_names", ()))


def load_extractor(spec: str | Path | FeatureExtractor | None = None, *,
                   inception_weights: str | Path | None = None) -> FeatureExtractor:
    """An extractor from ``None`` (the default classifier), ``"inception"``, a classifier folder or ``zoo:NAME``.

    Passing ``inception_weights`` selects Inception whatever ``spec`` says (unless it is a module).
    """
    if isinstance(spec, FeatureExtractor):
        return spec
    if inception_weights is not None or spec == "inception":
        return load_inception(inception_weights)
    return load_classifier_features(spec or DEFAULT_EXTRACTOR)


@dataclass(frozen=True)
class Features:
    """Features (N, d) float32 of an image set and, if the extractor has a head, logits (N, K)."""

    features: torch.Tensor
    logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.features)


@torch.no_grad()
def extract_batches(extractor: FeatureExtractor, batches: Iterable[torch.Tensor]) -> Iterator[Features]:
    """Features of each image batch (b, C, H, W) in [-1, 1]."""
    extractor.eval()
    for images in batches:
        feats = extractor((images.float() + 1) / 2)  # (b, d)
        yield Features(feats.float(), extractor.logits(feats))


def concat(parts: Iterable[Features]) -> Features:
    """Concatenate per-batch features along N."""
    parts = list(parts)
    logits = [p.logits for p in parts]
    cat_logits = None if any(x is None for x in logits) else torch.cat(logits)  # type: ignore[arg-type]
    return Features(torch.cat([p.features for p in parts]), cat_logits)


def extract(extractor: FeatureExtractor, images: torch.Tensor, *, batch_size: int = 500,
            progress: bool = False, desc: str = "extracting") -> Features:
    """Features of images (N, C, H, W) in [-1, 1], in batches, with an optional progress bar."""
    batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    bar = tqdm(batches, total=-(-len(images) // batch_size), desc=desc, disable=not progress, leave=False)
    return concat(extract_batches(extractor, bar))

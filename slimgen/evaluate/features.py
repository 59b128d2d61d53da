"""Feature extractors: the spaces in which quality metrics compare image sets.

Every extractor is an ``nn.Module`` usable as torchmetrics' ``feature=`` module with
``normalize=True``: it maps float images (N, C, H, W) in [0, 1] to features (N, num_features).
``logits(features)`` gives class logits (N, K) for the Inception-Score-style metrics.

Every extractor has a **role** (:data:`TRAINING` or :data:`REPORTING`): a training loss or a
best-epoch selection may only use a training-role extractor, and results are reported in a
reporting-role one that no training or selection step saw (a student trained to match its
teacher in the space it is scored in scores well there without matching it in the images).
:func:`training_extractor` is the only way training code gets an extractor; it refuses a
reporting extractor by role, by name and by identical weights hash.

Shipped extractors:

- ``zoo:fmnist-classifier`` (training): the Fashion-MNIST CNN used by distillation's perceptual
  term and by best-epoch selection on 1x28x28 models.
- ``zoo:fmnist-eval`` (reporting): an independently trained Fashion-MNIST classifier of another
  design (:class:`slimgen.models.ResidualClassifier`, another seed); the default reporting
  space for 1x28x28 images.
- ``random`` / ``random:SEED``: :class:`RandomConvFeatures`, a fixed-seed random-weight conv
  net for any image size with nothing downloaded (seed 0 reports, seed 1 trains/selects).
- ``inception`` (reporting): the standard FID Inception v3, from a local weights file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.evaluate.inception import FID_WEIGHTS_FILE, FIDInceptionV3

TRAINING, REPORTING = "training", "reporting"
ROLES = (TRAINING, REPORTING)
TRAINING_EXTRACTOR = "zoo:fmnist-classifier"  # training losses and best-epoch selection on 1x28x28 images
REPORTING_EXTRACTOR = "zoo:fmnist-eval"  # what results are reported in on 1x28x28 images
DEFAULT_EXTRACTOR = REPORTING_EXTRACTOR
ZOO_ROLES = {"fmnist-classifier": TRAINING, "fmnist-eval": REPORTING}
RANDOM_REPORTING_SEED, RANDOM_TRAINING_SEED = 0, 1


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
    role: str = REPORTING  # TRAINING or REPORTING; see the module docstring
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
                 class_names: Iterable[str] = (), role: str = REPORTING) -> None:
        super().__init__()
        if role not in ROLES:
            raise ConfigError(f"extractor role must be one of {', '.join(ROLES)}, got {role!r}")
        self.classifier = classifier.eval()
        self.name = name
        self.role = role
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
        self.role = REPORTING  # never a training loss: it is the field's reporting space
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
    """Features of a classifier model folder (``zoo:fmnist-eval`` by default).

    The role comes from :data:`ZOO_ROLES` for shipped folders; a user's folder reports
    (``reporting``) unless its weights are those of a shipped training extractor.
    """
    from slimgen.models import load_folder

    bundle = load_folder(spec)
    if bundle.kind != "classifier" or "classifier" not in bundle.parts:
        raise ModelFolderError(f"{spec}: not a classifier model folder (kind {bundle.kind!r})")
    name = str(spec)[4:] if str(spec).startswith("zoo:") else Path(spec).name
    role = ZOO_ROLES.get(name, REPORTING) if str(spec).startswith("zoo:") else REPORTING
    ext = ClassifierFeatures(bundle.parts["classifier"], name=name, input_shape=bundle.image_shape,
                             class_names=bundle.meta.get("class_names", ()), role=role)
    if not str(spec).startswith("zoo:") and ext.weights_hash in shipped_hashes(TRAINING):
        ext.role = TRAINING
    return ext


def load_extractor(spec: str | Path | FeatureExtractor | None = None, *,
                   inception_weights: str | Path | None = None) -> FeatureExtractor:
    """An extractor from ``None`` (the default reporting classifier), ``"inception"``, ``"random"``,
    ``"random:SEED"``, a classifier folder or ``zoo:NAME``.

    Passing ``inception_weights`` selects Inception whatever ``spec`` says (unless it is a module).
    """
    if isinstance(spec, FeatureExtractor):
        return spec
    if inception_weights is not None or spec == "inception":
        return load_inception(inception_weights)
    if isinstance(spec, str) and (spec == "random" or spec.startswith("random:")):
        return RandomConvFeatures(seed=_random_seed(spec))
    return load_classifier_features(spec or DEFAULT_EXTRACTOR)


def _random_seed(spec: str) -> int:
    text = spec.partition(":")[2] or str(RANDOM_REPORTING_SEED)
    if not text.isdigit():
        raise ConfigError(f"extractor {spec!r}: expected 'random' or 'random:SEED' with SEED a non-negative integer")
    return int(text)


def default_extractor(image_shape: tuple[int, int, int], role: str = REPORTING) -> FeatureExtractor:
    """The extractor of ``role`` for images (C, H, W): the shipped Fashion-MNIST classifier of that role
    for 1x28x28, otherwise the fixed-seed random conv net of that role (seed 0 reports, seed 1 trains)."""
    if tuple(image_shape) == (1, 28, 28):
        return load_classifier_features(REPORTING_EXTRACTOR if role == REPORTING else TRAINING_EXTRACTOR)
    return RandomConvFeatures(seed=RANDOM_REPORTING_SEED if role == REPORTING else RANDOM_TRAINING_SEED)


# --- the train-vs-report rule ------------------------------------------------------------------------

@lru_cache(maxsize=4)
def shipped_hashes(role: str) -> frozenset[str]:
    """Weights hashes of every shipped extractor of ``role`` (the zoo classifiers and the random net's seed)."""
    hashes = {RandomConvFeatures(seed=RANDOM_REPORTING_SEED if role == REPORTING else RANDOM_TRAINING_SEED).weights_hash}
    for name, zoo_role in ZOO_ROLES.items():
        if zoo_role == role:
            try:
                hashes.add(load_classifier_features(f"zoo:{name}").weights_hash)
            except ModelFolderError:  # not shipped in this installation
                continue
    return frozenset(hashes)


def _reporting_names() -> set[str]:
    return {"inception", f"random:{RANDOM_REPORTING_SEED}", "random"} | {
        f"zoo:{n}" for n, r in ZOO_ROLES.items() if r == REPORTING}


def check_training_use(spec: str | Path | FeatureExtractor | None, what: str) -> None:
    """Raise ConfigError if ``spec`` names a reporting extractor (by name only: no file is read).

    For recipe and config validation at parse time; :func:`training_extractor` also checks
    the role and the weights hash of what it loads.
    """
    if isinstance(spec, FeatureExtractor):
        _refuse_reporting(spec, what)
        return
    text = str(spec) if spec is not None else ""
    if text in _reporting_names() or text.rstrip("/").endswith(("/zoo/fmnist-eval",)):
        raise ConfigError(
            f"{what}: {text!r} is a reporting feature extractor; training losses and best-epoch selection may only use "
            f"a training extractor (e.g. {TRAINING_EXTRACTOR}, random:{RANDOM_TRAINING_SEED}), so that results are "
            "reported in a space no training step saw"
        )


def _refuse_reporting(ext: FeatureExtractor, what: str) -> None:
    same = ext.weights_hash in shipped_hashes(REPORTING)
    if getattr(ext, "role", REPORTING) != TRAINING or same or isinstance(ext, InceptionFeatures):
        why = "has the weights of a reporting extractor" if same else f"has the role {getattr(ext, 'role', None)!r}"
        raise ConfigError(
            f"{what}: the feature extractor {ext.name} {why}; training losses and best-epoch selection may only use "
            f"a training extractor (e.g. {TRAINING_EXTRACTOR}, random:{RANDOM_TRAINING_SEED}), so that results are "
            "reported in a space no training step saw"
        )


def training_extractor(spec: str | Path | FeatureExtractor | None, *, image_shape: tuple[int, int, int] | None = None,
                       what: str = "training") -> FeatureExtractor:
    """The extractor a training loss or a selection may use: ``spec`` (None/"auto": the training default
    for ``image_shape``), refused with ConfigError if it is a reporting extractor by name, role or weights."""
    check_training_use(spec, what)
    if spec is None or spec == "auto":
        ext = default_extractor(image_shape or (1, 28, 28), TRAINING)
    elif isinstance(spec, FeatureExtractor):
        ext = spec
    else:
        ext = load_extractor(spec)
        if isinstance(ext, RandomConvFeatures) or (isinstance(spec, str) and spec.startswith("zoo:")):
            pass  # role set from the tables
        elif ext.weights_hash not in shipped_hashes(REPORTING):
            ext.role = TRAINING  # a user's own classifier folder, named for training on purpose
    _refuse_reporting(ext, what)
    return ext


# --- any image size, nothing downloaded -----------------------------------------------------------------

class RandomConvFeatures(FeatureExtractor):
    """A fixed-seed random-weight conv net: images (N, C, H, W) in [0, 1], any H and W, C in {1, 3}
    -> features (N, 736).

    Why this default for images no shipped classifier fits: it needs no download and no data,
    it takes any size (images are resized to 64x64, bilinear with antialiasing; gray is repeated
    to RGB), and randomly initialised convolutional embeddings are known to give usable
    FID-like distances and precision/recall (Naeem et al. 2020, "Reliable Fidelity and Diversity
    Metrics for Generative Models", section 5), if less sensitive than a trained network's. The
    weights derive from ``seed`` only (Kaiming-normal convs, no norm layers), so the space is the
    same on every machine. Features: the global average of each of the four stages' ReLU maps
    (32 + 64 + 128 + 256) and the second stage pooled to 2x2 (4 x 64, for coarse layout),
    concatenated: 736 dimensions.
    Seed 0 is the reporting space; seed 1 (another net) is the training/selection space.
    """

    SIZE = 64
    WIDTHS = (32, 64, 128, 256)

    def __init__(self, *, seed: int = RANDOM_REPORTING_SEED) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        layers, cin = [], 3
        for w in self.WIDTHS:
            conv = nn.Conv2d(cin, w, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (cin * 9)) ** 0.5)
                conv.bias.zero_()
            layers.append(conv)
            cin = w
        self.convs = nn.ModuleList(layers)
        self.seed = int(seed)
        self.name = f"random-conv-s{seed}"
        self.role = REPORTING if seed == RANDOM_REPORTING_SEED else TRAINING
        self.num_features = sum(self.WIDTHS) + 4 * self.WIDTHS[1]
        self.weights_hash = state_hash(self)
        self.requires_grad_(False)

    def check_input(self, image_shape: tuple[int, int, int], what: str) -> None:
        if image_shape[0] not in (1, 3):
            raise ConfigError(f"{what} has images with {image_shape[0]} channels; the random-conv extractor takes 1 or 3")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (N, 3, H, W)
        if tuple(x.shape[2:]) != (self.SIZE, self.SIZE):
            x = nn.functional.interpolate(x, size=(self.SIZE, self.SIZE), mode="bilinear", antialias=True,
                                          align_corners=False)
        x = x * 2 - 1  # (N, 3, 64, 64) in [-1, 1]
        pooled = []
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))  # (N, w_i, 32 / 2^i, 32 / 2^i)
            pooled.append(x.mean(dim=(2, 3)))
            if i == 1:
                layout = nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)  # (N, 4 * 64)
        return torch.cat([*pooled, layout], dim=1)  # (N, 736)


@dataclass(frozen=True)
class Features:
    """Features (N, d) float32 of an image set and, if the extractor has a head, logits (N, K)."""

    features: torch.Tensor
    logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.features)


EXTRACT_CHUNK = 256  # images per extractor call: faster than 500-1,000 on 2 cores (cache-sized activations)


@torch.no_grad()
def extract_batches(extractor: FeatureExtractor, batches: Iterable[torch.Tensor]) -> Iterator[Features]:
    """Features of each image batch (b, C, H, W) in [-1, 1], one :class:`Features` per batch.

    Convolutions run channels-last (oneDNN's native layout on x86: the shipped classifiers extract
    about 1.6x faster on 1 thread; features equal the NCHW ones to summation order, max |diff|
    1e-5), in chunks of at most :data:`EXTRACT_CHUNK` images.
    """
    extractor.eval().to(memory_format=torch.channels_last)  # in place; a no-op once done
    for images in batches:
        parts = []
        for chunk in images.split(EXTRACT_CHUNK):
            x = ((chunk.float() + 1) / 2).contiguous(memory_format=torch.channels_last)  # (c, C, H, W) in [0, 1]
            parts.append(extractor(x).float())  # (c, d)
        feats = torch.cat(parts)  # (b, d)
        yield Features(feats, extractor.logits(feats))


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

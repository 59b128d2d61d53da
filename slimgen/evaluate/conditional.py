"""Quality of a class-conditional generator, class by class.

For every requested class k the generator draws ``n_per_class`` samples ``G(z, k)`` (latents
from the model's :class:`~slimgen.models.InputSpec` and ``seed``; the same latents for every
class and for every model, so two models are compared on the same inputs). Two numbers per
class:

- **FID of class k** in the extractor's feature space against a reference of the same class:
  the real images labelled k (default: Fashion-MNIST test, about 1,000 per class), or, with
  ``teacher=``, the teacher's own samples of class k on another latent seed
  (``reference_seed``), for a compressed model and data-free use. Per-class FIDs rest on fewer
  samples than the all-class FID and are biased upwards by that; compare them at equal N.
- **Accuracy**: the fraction of the samples the extractor's classifier head (by default
  ``zoo:fmnist-classifier``) assigns to class k. This assumes the generator's label k and the
  classifier's class k are the same class (true for Fashion-MNIST models and the zoo
  classifier); an extractor without a head gives None.

The classifier used here is never a training loss of the models it scores (the train-vs-report
rule: slimgen's conditional training uses only the adversarial loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.evaluate.features import FeatureExtractor, Features, extract, load_extractor
from slimgen.evaluate.quality import fid
from slimgen.evaluate.reference import reference_features
from slimgen.models.adapter import generate_all
from slimgen.models.inputs import InputSpec, inputs_of


@dataclass(frozen=True)
class ClassScore:
    """One class: label, name (if the extractor knows it), samples, FID (>= 0) and accuracy in [0, 1]."""

    label: int
    name: str | None
    n: int
    n_reference: int
    fid: float
    accuracy: float | None


@dataclass(frozen=True)
class ConditionalQuality:
    """Per-class quality of a conditional generator and what it was measured with.

    ``accuracy``: over all samples of all requested classes; ``mean_fid``: mean of the per-class
    FIDs; ``reference``: ``"<dataset>/<split> class k"`` or ``"teacher seed S class k"``.
    """

    extractor: str
    reference: str
    seed: int
    n_per_class: int
    per_class: list[ClassScore]
    accuracy: float | None
    mean_fid: float

    def to_dict(self) -> dict:
        return asdict(self)


def _classes(spec: InputSpec, classes: Sequence[int] | None) -> list[int]:
    if spec.num_classes is None:
        raise ConfigError("per-class quality needs a class-conditional generator (its inputs have no num_classes)")
    chosen = list(range(spec.num_classes)) if classes is None else [int(k) for k in classes]
    if not chosen:
        raise ConfigError("no class requested")
    bad = [k for k in chosen if not 0 <= k < spec.num_classes]
    if bad:
        raise ConfigError(f"class {bad[0]} is outside [0, {spec.num_classes})")
    return chosen


def _samples(generator: nn.Module, spec: InputSpec, k: int, n: int, seed: int, extractor: FeatureExtractor,
             batch_size: int) -> Features:
    images = generate_all(generator, spec.draw(n, seed=seed, classes=k), batch_size=batch_size)  # (n, C, H, W)
    return extract(extractor, images, batch_size=batch_size)


@torch.no_grad()
def measure_conditional(
    generator: nn.Module, *, spec: InputSpec | None = None, classes: Sequence[int] | None = None,
    n_per_class: int = 1000, seed: int = 0, extractor: FeatureExtractor | str | None = None,
    dataset: str = "fashion-mnist", split: str = "test", teacher: nn.Module | None = None,
    reference_seed: int | None = None, batch_size: int = 500,
) -> ConditionalQuality:
    """Per-class FID and classifier accuracy of ``generator`` (called ``G(z, y)``) on ``classes``.

    ``spec``: the input contract (default: the one attached to ``generator``); ``classes``:
    labels to measure (default: all). Reference per class: the real images of ``dataset``/``split``
    with that label, or ``teacher``'s samples of that class on ``reference_seed`` (default
    ``seed + 1``). ``extractor``: a FeatureExtractor, a classifier folder or None for the default.
    """
    spec = spec or inputs_of(generator)
    chosen = _classes(spec, classes)
    if n_per_class < 2:
        raise ConfigError(f"n_per_class must be >= 2 for a FID, got {n_per_class}")
    ext = load_extractor(extractor)
    probe = generate_all(generator, spec.draw(1, seed=seed, classes=chosen[0]))
    ext.check_input(tuple(probe.shape[1:]), "the generator")
    real_by_class: dict[int, torch.Tensor] = {}
    if teacher is None:
        from slimgen.data import load_dataset

        ref = reference_features(ext, dataset, split)
        labels = load_dataset(dataset, split).labels
        if labels is None or len(labels) != len(ref.features):
            raise ConfigError(f"{dataset}/{split} has no labels for its {len(ref.features)} images: "
                              "per-class FID needs labelled reference data (or a teacher)")
        for k in chosen:
            real_by_class[k] = ref.features.features[labels == k]
            if len(real_by_class[k]) < 2:
                raise ConfigError(f"{dataset}/{split} has {len(real_by_class[k])} images of class {k}; need >= 2")
        reference = f"{dataset}/{split} images of the class"
    else:
        rseed = seed + 1 if reference_seed is None else reference_seed
        if rseed == seed:
            raise ConfigError("reference_seed must differ from seed (the teacher on the same latents is fidelity)")
        for k in chosen:
            real_by_class[k] = _samples(teacher, spec, k, n_per_class, rseed, ext, batch_size).features
        reference = f"teacher samples of the class, latent seed {rseed}"
    names = ext.class_names
    scores: list[ClassScore] = []
    hits, total = 0, 0
    for k in chosen:
        fake = _samples(generator, spec, k, n_per_class, seed, ext, batch_size)
        acc = None
        if fake.logits is not None:
            right = int((fake.logits.argmax(dim=1) == k).sum())
            hits, total, acc = hits + right, total + len(fake), right / len(fake)
        name = names[k] if names is not None and k < len(names) else None
        scores.append(ClassScore(k, name, len(fake), len(real_by_class[k]), fid(real_by_class[k], fake.features), acc))
    return ConditionalQuality(
        extractor=ext.name, reference=reference, seed=seed, n_per_class=n_per_class, per_class=scores,
        accuracy=hits / total if total else None, mean_fid=sum(s.fid for s in scores) / len(scores))

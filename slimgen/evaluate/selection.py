"""Best-epoch selection: the score training uses to keep its best epoch, in a TRAINING feature space.

Selection is a training decision, so it obeys the train-vs-report rule (see
:mod:`slimgen.evaluate.features`): its extractor comes from :func:`training_extractor`, which
refuses every reporting extractor; a :class:`Selection` naming one fails when it is built
(so a recipe fails at parse time, before any work).

The score is the FID of ``n`` of the model's samples (latent seed ``seed``) against a reference:

- a data set whose images have the model's shape (C, H, W): its test split (Fashion-MNIST
  for the shipped 1x28x28 models);
- otherwise (or ``reference: teacher``) ``n`` of the teacher's own samples on another latent
  seed (``teacher_seed``): compression wants the teacher's distribution, and this needs no data.

The reference features are computed at the first scoring, not before: training never waits for
them, and a reference that cannot be read fails after the epoch's weights are on disk.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.evaluate.features import (
    FeatureExtractor,
    check_training_use,
    concat,
    extract_batches,
    training_extractor,
)
from slimgen.evaluate.quality import fid
from slimgen.models import ModelBundle, generate
from slimgen.models.inputs import InputSpec

Score = Callable[[nn.Module], float]
KNOWN_SHAPES = {"fashion-mnist": (1, 28, 28), "fmnist": (1, 28, 28), "digits": (1, 28, 28)}


@dataclass(frozen=True)
class Selection:
    """How a training run scores its epochs to keep the best one (lower is better).

    ``reference``: ``auto`` (the run's data set when its images have the model's shape, else the
    teacher's samples), ``teacher``, or a data set name, file or image folder. ``extractor``:
    ``auto`` (``zoo:fmnist-classifier`` for 1x28x28 images, the seed-1 random conv net
    otherwise) or a training extractor; a reporting extractor is a ConfigError. ``n``: samples
    per score; ``seed``: their latent seed (apart from the seed-0 reporting latents);
    ``teacher_seed``: latent seed of the teacher's reference samples.
    """

    reference: str = "auto"
    extractor: str = "auto"
    n: int = 2000
    seed: int = 1
    teacher_seed: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ConfigError(f"selection n must be an integer >= 2, got {self.n!r}")
        if self.seed == self.teacher_seed:
            raise ConfigError(f"selection seed and teacher_seed must differ (the teacher's reference samples need "
                              f"other latents), both are {self.seed}")
        if not isinstance(self.reference, str) or not self.reference:
            raise ConfigError(f"selection reference must be 'auto', 'teacher' or a data set, got {self.reference!r}")
        check_training_use(self.extractor, "best-epoch selection")
        if self.extractor != "auto" and Path(self.extractor).is_dir():  # a folder: check its weights too, now
            training_extractor(self.extractor, what="best-epoch selection")


def _data_shape(dataset: str) -> tuple[int, int, int] | None:
    """(C, H, W) of a data set's images without loading it where known; None if it cannot be read."""
    if dataset in KNOWN_SHAPES:
        return KNOWN_SHAPES[dataset]
    if not Path(dataset).exists():
        raise ConfigError(f"selection reference {dataset!r}: no such data set or path")
    return None  # read at the first scoring


def _spec(bundle: ModelBundle) -> InputSpec:
    from slimgen.evaluate.api import input_spec

    return input_spec(bundle)


@torch.no_grad()
def _features(ext: FeatureExtractor, generator: nn.Module, spec: InputSpec, n: int, seed: int) -> torch.Tensor | None:
    """Features (n, d) of the generator's images for ``spec.draw(n, seed)``; None if an image is not finite."""
    batches = list(generate(generator, spec.draw(n, seed=seed)))
    if not all(torch.isfinite(b).all() for b in batches):
        return None
    return concat(extract_batches(ext, batches)).features


def selection_scorer(selection: Selection, *, model: ModelBundle, teacher: ModelBundle | None = None,
                     dataset: str = "fashion-mnist") -> Score:
    """``generator -> FID`` for picking the best epoch of ``model``'s training (see the module docstring).

    ``teacher``: the model the run imitates (without one, the model as it is now, before
    training, serves as the teacher reference). ``dataset``: the run's data set, the reference
    when ``selection.reference`` is ``auto`` and its images have the model's shape. Everything
    that can be checked without reading the reference is checked here, before any training.
    A generator whose output holds NaN or Inf scores ``math.inf`` (never selected).
    """
    from slimgen.evaluate.api import output_shape
    from slimgen.evaluate.reference import cached_reference

    spec = _spec(model)
    shape = output_shape(model.generator, spec)
    ext = training_extractor(selection.extractor if selection.extractor != "auto" else None, image_shape=shape,
                             what="best-epoch selection")
    ext.check_input(shape, "the model")
    reference = selection.reference
    if reference == "auto":
        data_shape = _data_shape(dataset)
        reference = dataset if data_shape is None or data_shape == shape else "teacher"
    elif reference != "teacher":
        data_shape = _data_shape(reference)
        if data_shape is not None and data_shape != shape:
            raise ConfigError(f"selection reference {reference} holds images of shape {data_shape} (C, H, W), the "
                              f"model generates {shape}; use reference: teacher")
    source = teacher if teacher is not None else model
    frozen = copy.deepcopy(source.generator).eval() if reference == "teacher" else None
    cache: dict[str, torch.Tensor] = {}

    def real_features() -> torch.Tensor:
        if "real" not in cache:
            if frozen is not None:
                feats = _features(ext, frozen, spec, selection.n, selection.teacher_seed)
                if feats is None:
                    raise ConfigError("the selection's teacher generates non-finite images: it cannot be a reference")
                cache["real"] = feats
            else:
                ref = cached_reference(ext, reference, "test")
                if tuple(ref.image_shape) != shape:
                    raise ConfigError(f"selection reference {ref.name} holds images of shape {ref.image_shape}, the "
                                      f"model generates {shape}; use reference: teacher")
                cache["real"] = ref.features.features
        return cache["real"]

    def score(generator: nn.Module) -> float:
        real = real_features()
        fake = _features(ext, generator, spec, selection.n, selection.seed)
        return math.inf if fake is None else fid(real, fake)

    score.extractor = ext.name  # type: ignore[attr-defined]
    score.reference = "teacher" if frozen is not None else reference  # type: ignore[attr-defined]
    return score

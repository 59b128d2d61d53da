"""``evaluate``: quality, fidelity to a teacher and cost of a generative model, in one call."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.evaluate.cost import Cost, measure_cost
from slimgen.evaluate.features import FeatureExtractor, Features, concat, extract_batches, load_extractor
from slimgen.evaluate.fidelity import FidelityMeter
from slimgen.evaluate.quality import Quality, fid, measure_quality
from slimgen.evaluate.reference import PR_K, Reference, cached_reference, reference_features
from slimgen.io import write_json
from slimgen.models import ModelBundle, generate, load_folder
from slimgen.models.frame import check_same_frame
from slimgen.models.inputs import GenInputs, InputSpec
from slimgen.models.zoo import is_shipped

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class EvalResult(Quality, Cost):
    """What ``evaluate`` measured, with the settings that produced it: the :class:`Quality` and
    :class:`Cost` fields, plus fidelity to a teacher and the measurement settings.

    Quality: fid, kid_* (lower is better), precision/recall in [0, 1], inception_score (>= 1),
    class_histogram (fraction per class). Fidelity (None without a teacher): psnr in dB,
    ssim, feature_distance (mean L2 in feature space). Cost: params, nonzero_params, macs
    (multiply-accumulates per image), weight_bytes (the generator's tensors as stored),
    latencies in ms per call at batch 1 and 64 with ``threads`` CPU threads.
    """

    model: str | None
    class_names: list[str] | None
    teacher: str | None
    psnr: float | None
    ssim: float | None
    feature_distance: float | None
    extractor: str
    extractor_hash: str
    n: int
    reference: str
    reference_n: int
    seed: int
    seconds: float
    runtime: str = "pytorch fp32 (eager)"  # what generated the samples (slimgen.runtime.Engine.describe())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (an infinite PSNR, from identical images, becomes the string "inf")."""
        items = dataclasses.asdict(self).items()
        return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in items}


def _as_bundle(model: ModelBundle | str | Path) -> ModelBundle:
    return model if isinstance(model, ModelBundle) else load_folder(model)


def _name(bundle: ModelBundle) -> str | None:
    return str(bundle.path) if bundle.path is not None else None


@torch.no_grad()
def _output_shape(generator: nn.Module, inputs: InputSpec | int) -> tuple[int, int, int]:
    """(C, H, W) that the generator really produces (one sample of its input contract, eval mode)."""
    spec = InputSpec.latent(inputs) if isinstance(inputs, int) else inputs
    return tuple(next(generate(generator, spec.draw(1, seed=0))).shape[1:])  # type: ignore[return-value]


def check_compatible(generator: nn.Module, inputs: InputSpec | int, ref: Reference, extractor: FeatureExtractor,
                     *, what: str = "the model") -> None:
    """Raise ConfigError unless the generator's images have the reference data's (C, H, W)."""
    shape = _output_shape(generator, inputs)
    if shape != tuple(ref.image_shape):
        raise ConfigError(
            f"{what} generates images of shape {shape} (C, H, W) but the reference data {ref.name} holds "
            f"{tuple(ref.image_shape)}; evaluate against a data set of the model's image size and channels"
        )
    extractor.check_input(shape, what)


def _input_spec(bundle: ModelBundle) -> InputSpec:
    if bundle.inputs is None:
        raise ConfigError(f"{_name(bundle) or 'model'}: a {bundle.kind} folder without an input contract cannot generate")
    return bundle.inputs


def _sample_and_extract(generator: nn.Module, z: GenInputs, extractor: FeatureExtractor, *, batch_size: int,
                        progress: bool) -> Iterator[tuple[torch.Tensor, Features]]:
    """Yield (images (b, C, H, W) in [-1, 1], their features) batch by batch."""
    bar = tqdm(total=len(z), desc="sampling + extracting", disable=not progress, leave=False, unit="img")
    for images in generate(generator, z, batch_size=batch_size):
        if not torch.isfinite(images).all():
            raise ModelFolderError("the model generates non-finite values (NaN or Inf): its weights are broken")
        yield images, next(extract_batches(extractor, [images]))
        bar.update(len(images))
    bar.close()


def _generated_features(
    bundle: ModelBundle, teacher: ModelBundle | None, z: GenInputs, extractor: FeatureExtractor, *,
    batch_size: int, progress: bool,
) -> tuple[Features, FidelityMeter | None]:
    """Features of the model's images for inputs z (N, ...) and, with a teacher, fidelity on the same inputs."""
    meter = FidelityMeter() if teacher is not None else None
    teacher_batches = generate(teacher.generator, z, batch_size=batch_size) if teacher is not None else None
    parts = []
    for images, feats in _sample_and_extract(bundle.generator, z, extractor, batch_size=batch_size, progress=progress):
        parts.append(feats)
        if meter is not None and teacher_batches is not None:
            t_images = next(teacher_batches)
            meter.update_images(images, t_images)
            meter.update_features(feats.features, next(extract_batches(extractor, [t_images])).features)
    return concat(parts), meter


def evaluate(
    model: ModelBundle | str | Path, *, teacher: ModelBundle | str | Path | None = None,
    reference: str = "fashion-mnist", split: str = "test", n: int = 10000, seed: int = 0,
    extractor: str | Path | FeatureExtractor | None = None, inception_weights: str | Path | None = None,
    latency: bool = True, batch_size: int = 500, progress: bool = False, write: bool = True,
    runtime: str | None = None, precision: str | None = None,
) -> EvalResult:
    """Quality (against ``reference``/``split``), fidelity to ``teacher`` and cost of a model folder.

    ``n`` images come from the inputs ``bundle.inputs.draw(n, seed=seed)`` of the model's input
    contract; the teacher sees the same inputs. With ``write`` and a model that has a folder, ``metrics.json`` is written there.
    ``runtime``/``precision``: what generates the samples (:func:`slimgen.runtime.default_choice`:
    PyTorch fp32 by default, the int8 graph for a folder quantized with int8 activations);
    ``result.runtime`` says which ran. Cost (params, MACs, latency) is the folder's model's.
    """
    if n < 2:
        raise ConfigError(f"n must be at least 2 samples, got {n}")
    t0 = time.perf_counter()
    bundle = _as_bundle(model)
    teacher_b = _as_bundle(teacher) if teacher is not None else None
    ext = load_extractor(extractor, inception_weights=inception_weights)
    ref = reference_features(ext, reference, split, progress=progress)
    nz = _input_spec(bundle)
    check_compatible(bundle.generator, nz, ref, ext)
    if teacher_b is not None:
        if _input_spec(teacher_b) != nz:
            raise ConfigError(f"the teacher's inputs ({_input_spec(teacher_b).describe()}) differ from the model's "
                              f"({nz.describe()}) in latent size, distribution or labels")
        check_same_frame(bundle, teacher_b, what="fidelity to the teacher")
        check_compatible(teacher_b.generator, nz, ref, ext, what="the teacher")
    z = nz.draw(n, seed=seed)  # z (n, *latent_shape), y (n,)
    from slimgen.runtime import engine_for

    engine = engine_for(bundle.generator, bundle.meta, runtime=runtime, precision=precision)
    runs = dataclasses.replace(bundle, parts={**bundle.parts, "generator": engine}) if engine.runtime != "pytorch" or \
        engine.precision != "fp32" else bundle
    fake, meter = _generated_features(runs, teacher_b, z, ext, batch_size=batch_size, progress=progress)
    q = measure_quality(ref.features, fake, seed=seed, k=PR_K, real_radii=ref.radii)
    if not ext.class_names:  # e.g. Inception's 1008 ImageNet-ish classes: a histogram says little
        q = dataclasses.replace(q, class_histogram=None)
    fidelity = meter.compute() if meter is not None else None
    cost = measure_cost(bundle.generator, nz, folder=bundle.path, latency=latency)
    result = EvalResult(
        model=_name(bundle), **dataclasses.asdict(q), class_names=list(ext.class_names) if ext.class_names else None,
        **dataclasses.asdict(cost), teacher=_name(teacher_b) if teacher_b else None,
        psnr=fidelity.psnr if fidelity else None, ssim=fidelity.ssim if fidelity else None,
        feature_distance=fidelity.feature_distance if fidelity else None,
        extractor=ext.name, extractor_hash=ext.weights_hash, n=n, reference=ref.name, reference_n=len(ref.features),
        seed=seed, seconds=round(time.perf_counter() - t0, 3), runtime=engine.describe(),
    )
    if write and bundle.path is not None:
        if not is_shipped(bundle.path):  # never write into the installed package
            write_json(Path(bundle.path) / METRICS_FILE, result.to_dict())
    return result


@lru_cache(maxsize=1)
def _default_extractor() -> FeatureExtractor:
    return load_extractor(None)


def fid_score(generator: nn.Module, inputs: InputSpec | int, *, n: int = 2000, seed: int = 0,
              reference: str = "fashion-mnist") -> float:
    """FID of ``generator`` (inputs of ``inputs``, its contract or a latent size -> images in [-1, 1]) in the
    default feature space.

    For checkpoint selection in loops: the extractor and the reference features are loaded once
    per process (and cached on disk); the generator's train/eval mode is restored afterwards.
    A generator whose output holds NaN or Inf scores ``math.inf`` (the worst), so a diverged
    checkpoint is never selected.
    """
    ext = _default_extractor()
    ref = cached_reference(ext, reference, "test")
    check_compatible(generator, inputs, ref, ext)
    z = (InputSpec.latent(inputs) if isinstance(inputs, int) else inputs).draw(n, seed=seed)
    with torch.no_grad():
        batches = list(generate(generator, z))
    if not all(torch.isfinite(b).all() for b in batches):
        return math.inf
    return fid(ref.features.features, concat(extract_batches(ext, batches)).features)

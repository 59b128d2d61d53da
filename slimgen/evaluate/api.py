"""``evaluate``: quality, fidelity to a teacher and cost of a generative model, in one call."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from slimgen.errors import ConfigError, ModelFolderError
from slimgen.evaluate.cost import Cost, measure_cost
from slimgen.evaluate.features import (
    REPORTING,
    TRAINING,
    FeatureExtractor,
    Features,
    concat,
    default_extractor,
    extract_batches,
    load_extractor,
)
from slimgen.evaluate.fidelity import FidelityMeter
from slimgen.evaluate.memo import MEMO, module_key, tensors_key
from slimgen.evaluate.quality import Quality, fid, kid, kth_neighbour_radius, measure_quality
from slimgen.evaluate.reference import PR_K, Reference, folder_reference, reference_features
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

    Quality (in the reporting feature space ``extractor``, role ``extractor_role``): fid, kid_*
    (lower is better), precision/recall in [0, 1], inception_score (>= 1), class_histogram
    (fraction per class), against ``reference`` (``reference_n`` images): a data set's split
    (``reference_kind`` "data") or the teacher's own samples from latent seed ``reference_seed``
    (``reference_kind`` "teacher"). ``noise_fid`` / ``noise_kid_mean``: with a teacher, the
    teacher's own samples on latent seed ``seed`` against the same reference: what a perfect
    copy of the teacher would score (the noise floor of a teacher-referenced FID; with a data
    reference, the teacher's own FID). Fidelity (None without a teacher): psnr in dB, ssim,
    feature_distance (mean L2 in the reporting feature space) on the same latents.
    ``training_space``: the same quality numbers in the training/selection feature space (the
    space distillation's perceptual term and best-epoch selection use), when it differs from the
    reporting one and fits the images; ``train_fid`` is its FID. Cost: params, nonzero_params,
    macs (multiply-accumulates per image), weight_bytes (the generator's tensors as stored),
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
    extractor_role: str = REPORTING
    reference_kind: str = "data"
    reference_seed: int | None = None
    noise_fid: float | None = None
    noise_kid_mean: float | None = None
    train_fid: float | None = None
    training_space: dict[str, Any] | None = None
    runtime: str = "pytorch fp32 (eager)"  # what generated the samples (slimgen.runtime.Engine.describe())
    per_class: dict[str, Any] | None = None  # class-conditional models: per-class FID and accuracy (evaluate.conditional)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (an infinite PSNR, from identical images, becomes the string "inf")."""
        items = dataclasses.asdict(self).items()
        return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in items}


def _as_bundle(model: ModelBundle | str | Path) -> ModelBundle:
    return model if isinstance(model, ModelBundle) else load_folder(model)


def _name(bundle: ModelBundle) -> str | None:
    return str(bundle.path) if bundle.path is not None else None


def input_spec(bundle: ModelBundle) -> InputSpec:
    """The bundle's input contract (derived from ``latent_dim`` for older folders)."""
    if bundle.inputs is not None:
        return bundle.inputs
    if not bundle.latent_dim:
        raise ConfigError(f"{_name(bundle) or 'model'}: a {bundle.kind} folder without a latent size cannot generate")
    return InputSpec.latent(int(bundle.latent_dim))


@torch.no_grad()
def output_shape(generator: nn.Module, spec: InputSpec) -> tuple[int, int, int]:
    """(C, H, W) that the generator really produces (one sample drawn through the contract, eval mode)."""
    return tuple(next(generate(generator, spec.draw(1, seed=0))).shape[1:])  # type: ignore[return-value]


def check_compatible(generator: nn.Module, latent_dim: int | InputSpec, ref: Reference, extractor: FeatureExtractor,
                     *, what: str = "the model") -> None:
    """Raise ConfigError unless the generator's images have the reference data's (C, H, W)."""
    spec = latent_dim if isinstance(latent_dim, InputSpec) else InputSpec.latent(int(latent_dim))
    shape = output_shape(generator, spec)
    if shape != tuple(ref.image_shape):
        raise ConfigError(
            f"{what} generates images of shape {shape} (C, H, W) but the reference data {ref.name} holds "
            f"{tuple(ref.image_shape)}; evaluate against a data set of the model's image size and channels, "
            "or against the teacher's own samples (--reference teacher)"
        )
    extractor.check_input(shape, what)


def _cost(bundle: ModelBundle, spec: InputSpec, latency: bool) -> Cost:
    return measure_cost(bundle.generator, spec, folder=bundle.path, latency=latency)


# mean over pixels of the spread across samples on the [-1, 1] scale (1% of the range, ~2.5 of 255 grey levels):
# below it, "nearly identical" (a random-weight FastGAN-like net under spectral norm: 0.005; trained Fashion-MNIST: ~0.5)
COLLAPSED_STD = 0.02


def _spread(images: torch.Tensor) -> float:
    """Mean over pixels of the standard deviation across samples (B, C, H, W); inf for a single sample."""
    return float(images.float().std(0).mean()) if len(images) > 1 else math.inf


def _warn_if_collapsed(spread: float, what: str) -> None:
    """Warn when samples are nearly one image repeated (``spread`` from :func:`_spread`, on the [-1, 1] scale): a
    random or collapsed generator, whose FID against a reference of the same kind is near 0 and says nothing."""
    if spread < COLLAPSED_STD:
        warnings.warn(f"{what} are nearly identical (mean spread across samples {spread:.1e} on the [-1, 1] scale): "
                      "a random or collapsed generator; quality numbers against such samples say little",
                      stacklevel=3)


def _features_of(generator: nn.Module, inputs: GenInputs, extractors: list[FeatureExtractor], *, batch_size: int,
                 progress: bool, desc: str, images_out: list[torch.Tensor] | None = None
                 ) -> tuple[list[Features], float]:
    """Features of the generator's images for ``inputs`` in each extractor, and the first batch's :func:`_spread`;
    images kept in ``images_out`` if given."""
    parts: list[list[Features]] = [[] for _ in extractors]
    bar = tqdm(total=len(inputs), desc=desc, disable=not progress, leave=False, unit="img")
    spread = math.inf
    for i, images in enumerate(generate(generator, inputs, batch_size=batch_size)):
        if not torch.isfinite(images).all():
            raise ModelFolderError("the model generates non-finite values (NaN or Inf): its weights are broken")
        if i == 0:
            spread = _spread(images)
        for ext, acc in zip(extractors, parts, strict=True):
            acc.append(next(extract_batches(ext, [images])))
        if images_out is not None:
            images_out.append(images)
        bar.update(len(images))
    bar.close()
    return [concat(p) for p in parts], spread


def resolve_reference(reference: str, image_shape: tuple[int, int, int], *, has_teacher: bool) -> str:
    """``auto`` -> ``fashion-mnist`` for 1x28x28 images, else ``teacher`` (needs a teacher); others unchanged."""
    if reference != "auto":
        if reference == "teacher" and not has_teacher:
            raise ConfigError("--reference teacher needs a teacher (--teacher MODEL): its own samples are the reference")
        return reference
    if tuple(image_shape) == (1, 28, 28):
        return "fashion-mnist"
    if has_teacher:
        return "teacher"
    raise ConfigError(
        f"no shipped data set holds images of the model's shape {tuple(image_shape)} (C, H, W): pass --teacher MODEL "
        "(quality against the teacher's own samples) or --dataset FOLDER (your images, resized to the model's size)"
    )


def _data_reference(ext: FeatureExtractor, reference: str, split: str, image_shape: tuple[int, int, int], *,
                    progress: bool) -> Reference:
    if Path(reference).is_dir():  # a user's folder: images of any size, resized as clean-fid does
        return folder_reference(ext, reference, image_shape, progress=progress)
    return reference_features(ext, reference, split, progress=progress)


def evaluate(
    model: ModelBundle | str | Path, *, teacher: ModelBundle | str | Path | None = None,
    reference: str = "auto", split: str = "test", n: int = 10000, seed: int = 0,
    extractor: str | Path | FeatureExtractor | None = None, inception_weights: str | Path | None = None,
    training_space: bool = True, reference_seed: int | None = None,
    latency: bool = True, batch_size: int = 500, progress: bool = False, write: bool = True,
    runtime: str | None = None, precision: str | None = None,
) -> EvalResult:
    """Quality, fidelity to ``teacher`` and cost of a model folder.

    ``reference``: ``auto`` (Fashion-MNIST's ``split`` for 1x28x28 images, otherwise the
    teacher's samples), ``teacher`` (``n`` of the teacher's own samples drawn with latent seed
    ``reference_seed``, default ``seed + 10000``), a data set name or file, or a folder of images
    of any size (resized to the model's (H, W) with PIL bicubic on uint8, as clean-fid does).
    ``extractor``: the reporting feature space (default: ``zoo:fmnist-eval`` for 1x28x28,
    the seed-0 random conv net otherwise); with ``training_space`` the numbers in the training
    space are added (:attr:`EvalResult.training_space`). ``n`` inputs come from
    ``bundle.inputs.draw(n, seed=seed)``; the teacher sees the same inputs. With ``write`` and a
    model that has a folder, ``metrics.json`` is written there.
    ``runtime``/``precision``: what generates the samples (:func:`slimgen.runtime.default_choice`:
    PyTorch fp32 by default, the int8 graph for a folder quantized with int8 activations);
    ``result.runtime`` says which ran. Cost (params, MACs, latency) is the folder's model's.
    """
    if n < 2:
        raise ConfigError(f"n must be at least 2 samples, got {n}")
    t0 = time.perf_counter()
    bundle = _as_bundle(model)
    teacher_b = _as_bundle(teacher) if teacher is not None else None
    spec = input_spec(bundle)
    shape = output_shape(bundle.generator, spec)
    if teacher_b is not None:
        if input_spec(teacher_b) != spec:
            raise ConfigError(f"the teacher's inputs ({input_spec(teacher_b).describe()}) differ from the model's "
                              f"({spec.describe()}) in latent size, distribution or labels")
        check_same_frame(bundle, teacher_b, what="fidelity to the teacher")
        t_shape = output_shape(teacher_b.generator, spec)
        if t_shape != shape:
            raise ConfigError(f"the teacher generates images of shape {t_shape} (C, H, W), the model {shape}")
    kind = resolve_reference(reference, shape, has_teacher=teacher_b is not None)
    if extractor is None and inception_weights is None:
        ext = default_extractor(shape, REPORTING)
    else:
        ext = load_extractor(extractor, inception_weights=inception_weights)
    if kind == "teacher":
        ext.check_input(shape, _name(bundle) or "the model")
    extractors = [ext]
    if training_space and ext.role == REPORTING:
        train_ext = default_extractor(shape, TRAINING)
        if train_ext.weights_hash != ext.weights_hash:
            extractors.append(train_ext)
    ref_seed = (seed + 10_000) if reference_seed is None else reference_seed
    setting = (tuple((e.name, e.weights_hash) for e in extractors), batch_size, torch.get_num_threads())  # memo keys
    refs: list[Reference]
    if kind == "teacher":
        assert teacher_b is not None
        if ref_seed == seed:
            raise ConfigError(f"the teacher reference needs another latent seed than the model's ({seed})")
        ref_inputs = spec.draw(n, seed=ref_seed)
        ref_feats, ref_spread = MEMO.get(  # the same for every step of a run (slimgen/evaluate/memo.py)
            ("teacher reference", module_key(teacher_b.generator), tensors_key([ref_inputs.z, ref_inputs.y]), *setting),
            lambda: _features_of(teacher_b.generator, ref_inputs, extractors, batch_size=batch_size,
                                 progress=progress, desc="teacher reference"))
        _warn_if_collapsed(ref_spread, "the teacher's samples (the reference)")
        name = f"teacher samples ({_name(teacher_b) or 'in memory'}, latent seed {ref_seed})"
        refs = [Reference(name, shape, f, kth_neighbour_radius(f.features, PR_K)) for f in ref_feats]
    else:
        refs = [_data_reference(e, kind, split, shape, progress=progress) for e in extractors]
        for e, r in zip(extractors, refs, strict=True):
            if tuple(r.image_shape) != shape:
                raise ConfigError(
                    f"the model generates images of shape {shape} (C, H, W) but the reference data {r.name} holds "
                    f"{tuple(r.image_shape)}; evaluate against a data set of the model's image size and channels, "
                    "or against the teacher's own samples (--reference teacher)")
            e.check_input(shape, r.name)
    inputs = spec.draw(n, seed=seed)
    from slimgen.runtime.engines import default_choice, engine_for, int8_activations

    # what a run's repeated evaluations would compute again (slimgen/evaluate/memo.py): same numbers, computed once
    common = (tensors_key([inputs.z, inputs.y]), *setting)
    choice = default_choice(runtime, precision, int8_folder=int8_activations(bundle.meta))
    model_key = (module_key(bundle.generator), choice, repr(bundle.meta.get("activation_quant")), *common)

    engines: list[Any] = []

    def runs() -> nn.Module:  # what generates the samples, built on first use (not at all when they are memoized)
        if not engines:
            engines.append(engine_for(bundle.generator, bundle.meta, runtime=runtime, precision=precision))
        engine = engines[0]
        return engine if engine.runtime != "pytorch" or engine.precision != "fp32" else bundle.generator

    def sample() -> tuple[str, list[Features], list[torch.Tensor], float]:
        images: list[torch.Tensor] = []
        feats, spread = _features_of(runs(), inputs, extractors, batch_size=batch_size, progress=progress,
                                     desc="sampling + extracting", images_out=images if teacher_b is not None else None)
        return engines[0].describe(), feats, images, spread

    runs_on, fakes, images, spread = MEMO.get(("samples", *model_key, teacher_b is not None), sample)
    _warn_if_collapsed(spread, "the model's samples")
    ref_keys = tuple(_reference_key(r) for r in refs)
    qualities = [MEMO.get(("quality", rk, *model_key, seed), lambda r=r, f=f: measure_quality(
                     r.features, f, seed=seed, k=PR_K, real_radii=r.radii))
                 for r, f, rk in zip(refs, fakes, ref_keys, strict=True)]
    q = qualities[0]
    if not ext.class_names:  # e.g. Inception's 1008 ImageNet-ish classes: a histogram says little
        q = dataclasses.replace(q, class_histogram=None)
    fidelity = None
    noise: list[tuple[float, float]] = []
    if teacher_b is not None:
        teacher_key = (module_key(teacher_b.generator), *common)

        def teacher_samples() -> tuple[list[Features], list[torch.Tensor], float]:
            t_images: list[torch.Tensor] = []
            feats, spread = _features_of(teacher_b.generator, inputs, extractors, batch_size=batch_size,
                                         progress=progress, desc="teacher, same latents", images_out=t_images)
            return feats, t_images, spread

        t_feats, t_images, t_spread = MEMO.get(("teacher samples", *teacher_key), teacher_samples)
        if kind != "teacher":  # else the reference's own warning said it
            _warn_if_collapsed(t_spread, "the teacher's samples")
        meter = FidelityMeter()
        meter.update_images(torch.cat(images), torch.cat(t_images))
        meter.update_features(fakes[0].features, t_feats[0].features)
        fidelity = meter.compute()
        noise = [MEMO.get(("noise", rk, *teacher_key, seed), lambda r=r, t=t: (
                     fid(r.features.features, t.features), kid(r.features.features, t.features, seed=seed)[0]))
                 for r, t, rk in zip(refs, t_feats, ref_keys, strict=True)]
    train_space = None
    if len(extractors) > 1:
        tq = qualities[1]
        train_space = {"extractor": extractors[1].name, "extractor_hash": extractors[1].weights_hash,
                       "role": TRAINING, "fid": tq.fid, "kid_mean": tq.kid_mean, "kid_std": tq.kid_std,
                       "precision": tq.precision, "recall": tq.recall, "reference": refs[1].name,
                       "noise_fid": noise[1][0] if noise else None}
    cost = _cost(bundle, spec, latency)
    per_class = _per_class(runs() if spec.num_classes is not None else bundle.generator, spec, ext, kind=kind,
                           dataset=kind if kind != "teacher" else None, split=split,
                           teacher=teacher_b.generator if teacher_b is not None and kind == "teacher" else None,
                           n=n, seed=seed, ref_seed=ref_seed, batch_size=batch_size)
    result = EvalResult(
        per_class=per_class,
        model=_name(bundle), **dataclasses.asdict(q), class_names=list(ext.class_names) if ext.class_names else None,
        **dataclasses.asdict(cost), teacher=_name(teacher_b) if teacher_b else None,
        psnr=fidelity.psnr if fidelity else None, ssim=fidelity.ssim if fidelity else None,
        feature_distance=fidelity.feature_distance if fidelity else None,
        extractor=ext.name, extractor_hash=ext.weights_hash, n=n, reference=refs[0].name,
        reference_n=len(refs[0].features), seed=seed, seconds=round(time.perf_counter() - t0, 3), runtime=runs_on,
        extractor_role=ext.role, reference_kind="teacher" if kind == "teacher" else "data",
        reference_seed=ref_seed if kind == "teacher" else None,
        noise_fid=noise[0][0] if noise else None, noise_kid_mean=noise[0][1] if noise else None,
        train_fid=train_space["fid"] if train_space else None, training_space=train_space,
    )
    if write and bundle.path is not None:
        if not is_shipped(bundle.path):  # never write into the installed package
            write_json(Path(bundle.path) / METRICS_FILE, result.to_dict())
    return result


def _reference_key(ref: Reference) -> tuple[str, str]:
    return ref.name, tensors_key([ref.features.features])


def _per_class(generator: nn.Module, spec: InputSpec, ext: FeatureExtractor, *, kind: str, dataset: str | None,
               split: str, teacher: nn.Module | None, n: int, seed: int, ref_seed: int, batch_size: int,
               ) -> dict[str, Any] | None:
    """Per-class FID (same reporting extractor, same kind of reference) and classifier accuracy of a
    class-conditional generator, ``n // num_classes`` samples per class; None for unconditional ones."""
    if spec.num_classes is None:
        return None
    from slimgen.evaluate.conditional import measure_conditional

    per = max(2, n // spec.num_classes)
    ref = {"teacher": teacher, "reference_seed": ref_seed} if kind == "teacher" else {"dataset": dataset, "split": split}
    return measure_conditional(generator, spec=spec, n_per_class=per, seed=seed, extractor=ext,
                               batch_size=batch_size, **ref).to_dict()


def fid_score(generator: nn.Module, inputs: int | InputSpec, *, n: int = 2000, seed: int = 1,
              reference: str = "fashion-mnist", extractor: str | None = None) -> float:
    """FID of ``generator`` against ``reference``'s test split in a TRAINING feature space (for selection).

    ``extractor``: a training extractor (default: the training default for the image shape); a
    reporting extractor is refused (ConfigError). A generator whose output holds NaN or Inf
    scores ``math.inf`` (the worst), so a diverged checkpoint is never selected. Prefer
    :func:`slimgen.evaluate.selection.selection_scorer`, which also scores against a teacher.
    """
    from slimgen.evaluate.selection import Selection, selection_scorer

    spec = inputs if isinstance(inputs, InputSpec) else InputSpec.latent(int(inputs))
    bundle = ModelBundle.from_modules("gan", {"generator": generator}, {}, inputs=spec,
                                      latent_dim=spec.latent_numel)
    selection = Selection(reference=reference, extractor=extractor or "auto", n=n, seed=seed,
                          teacher_seed=seed + 1)
    return selection_scorer(selection, model=bundle, dataset=reference)(generator)

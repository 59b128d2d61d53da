"""``distill``: train a student generator to imitate a teacher; a model bundle in, a model bundle out."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from slimgen.data import ImageSet
from slimgen.distill.config import Distillation
from slimgen.distill.features import FeaturePair, match_layers
from slimgen.distill.task import Critics, DistillTask
from slimgen.errors import ConfigError
from slimgen.models import ModelBundle
from slimgen.models.frame import check_same_frame
from slimgen.models.inputs import InputSpec, calibration_inputs, carried_inputs, inputs_of, run, set_inputs
from slimgen.models.layers import resolve_config, uses_selectors
from slimgen.models.mode import in_mode
from slimgen.train.loop import LoopSettings, resolve_device
from slimgen.train.qat import FakeQuant
from slimgen.train.trainer import EMA, Fit, Hook, KeepZeros, fit, frozen_copy, register_preset, sparse_layers

Score = Callable[[nn.Module], float]
M = TypeVar("M", ModelBundle, nn.Module)


DATA_FREE_N = 60_000  # samples per epoch of a data-free run: one Fashion-MNIST train split's worth


@torch.no_grad()
def _image_shape(generator: nn.Module, inputs: InputSpec) -> tuple[int, ...]:
    with in_mode(generator):
        return tuple(run(generator, inputs.draw(2, seed=0)).shape[1:])


def needs_real_images(config: Distillation) -> list[str]:
    """The loss terms of ``config`` that need real images (adversarial against real images, VAE reconstruction
    and KL)."""
    needing = ("adversarial", "vae_recon", "vae_kl") if config.losses.adversarial_real == "data" else ("vae_recon",
                                                                                                      "vae_kl")
    return [k for k in needing if k in config.losses.active()]


def resolve_losses(config: Distillation, teacher: ModelBundle | nn.Module, data: ImageSet | None) -> Distillation:
    """``config`` with ``adversarial: auto`` made a number for this teacher and data (:meth:`DistillLosses.resolved`)."""
    has_d = isinstance(teacher, ModelBundle) and teacher.discriminator is not None
    return replace(config, losses=config.losses.resolved(discriminator=has_d, real_images=data is not None))


def data_free(image_shape: tuple[int, ...], n: int = DATA_FREE_N) -> ImageSet:
    """No real images: a stand-in that only paces epochs (``n`` samples of batch_size each); the student
    learns from the teacher's outputs on latents drawn through the input contract. Costs no memory
    (one zero image, expanded)."""
    zeros = torch.zeros(1, *image_shape).expand(n, *image_shape)  # (n, C, H, W), a view of one image
    return ImageSet(zeros, None, "none (data-free: teacher outputs on drawn latents)")


def check_pair(student: ModelBundle, teacher: ModelBundle, config: Distillation, data: ImageSet | None) -> InputSpec:
    """Raise ConfigError unless student, teacher and data fit the loss terms asked for; returns the input contract."""
    if student.inputs is None or student.inputs != teacher.inputs:
        raise ConfigError("student and teacher need the same inputs (same latent size, distribution and labels), got "
                          f"{student.inputs.describe() if student.inputs else 'none'} and "
                          f"{teacher.inputs.describe() if teacher.inputs else 'none'}")
    nz = student.inputs
    check_same_frame(student, teacher, what="distillation")
    s_shape, t_shape = _image_shape(student.generator, nz), _image_shape(teacher.generator, nz)
    if s_shape != t_shape:
        raise ConfigError(f"the student generates images of shape {s_shape} (C, H, W), the teacher {t_shape}")
    losses = config.losses
    if losses.adversarial > 0 and teacher.discriminator is None:
        raise ConfigError("the adversarial loss needs a teacher with a discriminator part; set adversarial: 0")
    if (losses.vae_recon > 0 or losses.vae_kl > 0) and "encoder" not in teacher.parts:
        raise ConfigError(f"vae_recon and vae_kl need a VAE teacher with an encoder part, got a {teacher.kind} model; "
                          "set them to 0")
    needs_data = needs_real_images(config)
    if needs_data and data is None:
        also = (" (adversarial: auto turns it off where there are none; adversarial_real: teacher makes the "
                "teacher's images its real class)") if "adversarial" in needs_data else ""
        raise ConfigError(f"the {' and '.join(needs_data)} loss(es) need real images: give the data (--dataset, a "
                          f"recipe's dataset:), or set them to 0 to distil data-free{also}")
    if (losses.adversarial > 0 and losses.adversarial_real == "data" and nz.conditional and data is not None
            and data.labels is None):
        raise ConfigError(f"the adversarial loss of a class-conditional model scores real images with their labels, "
                          f"D(x, y), but the data {data.name} has none: use labelled data or set adversarial: 0")
    if needs_data and data is not None and tuple(data.image_shape) != s_shape:
        raise ConfigError(f"the data {data.name} holds images of shape {data.image_shape} (C, H, W) but the models "
                          f"generate {s_shape}")
    return nz


def _critics(student: ModelBundle, teacher: ModelBundle, config: Distillation, device: torch.device) -> Critics:
    """Discriminator (a trainable copy of the teacher's), encoder and perceptual extractor as the losses need."""
    losses = config.losses
    critics = Critics()
    if losses.adversarial > 0:
        critics.discriminator = copy.deepcopy(teacher.discriminator).to(device)
    if losses.vae_recon > 0 or losses.vae_kl > 0:
        source = student.parts.get("encoder", teacher.parts["encoder"])
        critics.train_encoder = losses.vae_kl > 0
        critics.encoder = (copy.deepcopy(source) if critics.train_encoder else frozen_copy(source)).to(device)
    if losses.perceptual > 0:  # only a training extractor: the reporting ones are refused here
        from slimgen.evaluate.features import training_extractor

        shape = tuple(student.image_shape) if student.image_shape else None
        ext = training_extractor(None if config.extractor == "auto" else config.extractor, image_shape=shape,
                                 what="distillation's perceptual term")
        if shape is not None:
            ext.check_input(shape, "the student")
        critics.extractor = frozen_copy(ext).to(device)
    return critics


def _pairs(student: nn.Module, teacher: nn.Module, config: Distillation, inputs: InputSpec) -> list[FeaturePair]:
    if config.losses.feature == 0:
        return []
    return match_layers(student, teacher, inputs)


def _keep_trained_parts(out: ModelBundle, teacher: ModelBundle, critics: Critics) -> None:
    """Put the discriminator and encoder that trained with the student into the returned bundle."""
    if critics.discriminator is not None:
        out.parts["discriminator"] = critics.discriminator.cpu().eval()
        out.specs["discriminator"] = copy.deepcopy(teacher.specs["discriminator"])
    if critics.encoder is not None and critics.train_encoder:
        out.parts["encoder"] = critics.encoder.cpu().eval()
        out.specs.setdefault("encoder", copy.deepcopy(teacher.specs["encoder"]))


def _step_record(config: Distillation, teacher: ModelBundle, pairs: list[FeaturePair], done: Fit) -> dict[str, Any]:
    step: dict[str, Any] = {
        "step": "distill", "config": asdict(config), "teacher": str(teacher.path) if teacher.path else "in memory",
        "feature_pairs": [asdict(p) for p in pairs], **done.record(),
    }
    if done.best.state is not None:
        step["best_score"] = done.best.score
    return step


def distill(student: M, teacher: ModelBundle | nn.Module, config: Distillation, *, data: ImageSet | None = None,
            checkpoint_dir: str | Path | None = None, resume: bool = False, device: str = "auto",
            score: Score | None = None) -> M:
    """Distil ``teacher``'s generator into ``student``'s; returns a new bundle (both inputs are left unchanged).

    ``student``: a slimmer model (:func:`slim_student`) or the teacher after structured pruning,
    same input contract and image shape (C, H, W); bundles, or plain generator modules carrying
    their input contract (then a module is returned, the step recorded on its state).
    ``data``: real images (N, C, H, W) in [-1, 1], used by the adversarial and VAE terms and to
    pace epochs; None distils data-free (:func:`data_free`: output, feature and perceptual
    terms on drawn latents; epochs of ``DATA_FREE_N`` samples). Feature adapters train with the
    student and are kept in the checkpoint, not in the returned model. ``score(generator) ->
    float`` (lower is better, e.g. FID) runs after every epoch and the best epoch is returned;
    without it, the last. One checkpoint per epoch in ``checkpoint_dir``; ``resume`` continues.

    Under torchrun every rank calls this with the same arguments: student, adapters and the
    trained critics run in DistributedDataParallel on shards of each global batch of
    ``config.batch_size``; rank 0 alone scores (every rank keeps the best epoch by rank 0's
    score) and writes checkpoints.
    """
    config = resolve_losses(config, teacher, data)
    if isinstance(student, nn.Module):
        return _distill_modules(student, teacher, config, data=data, checkpoint_dir=checkpoint_dir, resume=resume,
                                device=device, score=score)
    if not isinstance(teacher, ModelBundle):
        raise ConfigError("distill: give student and teacher both as ModelBundles or both as nn.Modules")
    nz = check_pair(student, teacher, config, data)
    if data is None:
        data = data_free(teacher.image_shape)
    dev = resolve_device(device)
    out = student.copy()
    if config.fake_quant is not None and uses_selectors(config.fake_quant):  # the student's own names, hook and record
        example = calibration_inputs(out.inputs, 2) if out.inputs is not None else None
        config = replace(config, fake_quant=resolve_config(config.fake_quant, out.generator, example))
    g, t = out.generator.to(dev), frozen_copy(teacher.generator).to(dev)
    pairs = _pairs(g, t, config, nz)
    if not pairs and config.losses.feature > 0:  # no intermediate feature maps (tokens (B, N, C) up to the image)
        unpaired = ("the feature loss found no student and teacher layers (norms, activations or convolutions with a "
                    "4-D output) of the same spatial size")
        if config.losses.active() == ("feature",):
            raise ConfigError(f"{unpaired}, and it was the only loss term: set output (or another term) > 0")
        warnings.warn(f"{unpaired}: distilling without it (feature: 0)", stacklevel=2)
        config = replace(config, losses=replace(config.losses, feature=0.0))  # recorded as trained: without the term
    critics = _critics(out, teacher, config, dev)
    hooks = _hooks(out, config)
    torch.manual_seed(config.seed)  # the adapters' initial weights
    task = DistillTask(g, t, inputs=nz, losses=config.losses, pairs=pairs, critics=critics, lr=config.lr,
                       betas=config.betas, hooks=hooks, discriminator_lr=config.discriminator_lr)
    settings = LoopSettings(config.epochs, config.batch_size, config.seed, config.steps_per_epoch, config.lr_schedule)
    done = fit(task, data, settings, device=dev, desc="distill", score=score, checkpoint_dir=checkpoint_dir,
               resume=resume, precision=config.precision)
    out.parts["generator"] = g.cpu().eval()
    _keep_trained_parts(out, teacher, critics)
    step = _step_record(config, teacher, pairs, done)
    step["data"] = data.name
    return out.with_step(step).sync_state()


def _hooks(student: ModelBundle, config: Distillation) -> tuple[Hook, ...]:
    """Zeros of sparse-stored layers kept, the weights fake-quantized (``config.fake_quant``), the EMA."""
    sparse = sparse_layers(student)
    if config.fake_quant is not None and sparse:
        raise ConfigError(f"fake_quant with sparse-stored layers ({', '.join(sparse)}) is not supported: distil "
                          "the sparse student in float, then quantize it")
    hooks: list[Hook] = [KeepZeros(sparse)]
    if config.fake_quant is not None:
        hooks.append(FakeQuant(config.fake_quant))
    if config.ema:
        hooks.append(EMA(config.ema))
    return tuple(hooks)


@register_preset(Distillation)
def _distill_preset(bundle: ModelBundle, config: Distillation, *, teacher: ModelBundle, **kwargs: Any) -> ModelBundle:
    return distill(bundle, teacher, config, **kwargs)


def _distill_modules(student: nn.Module, teacher: ModelBundle | nn.Module, config: Distillation, **kwargs: Any
                     ) -> nn.Module:
    """:func:`distill` on plain modules: each is seen as the bundle its state describes."""
    from slimgen.models.pretrained import bundle_of, detached_copy, module_of

    if isinstance(teacher, ModelBundle):
        t_bundle = teacher
    else:
        t_module = detached_copy(teacher)
        if carried_inputs(t_module) is None:
            set_inputs(t_module, inputs_of(student))
        t_bundle = bundle_of(t_module)
    s_module = detached_copy(student)
    if carried_inputs(s_module) is None:
        set_inputs(s_module, inputs_of(t_bundle.generator))
    return module_of(distill(bundle_of(s_module), t_bundle, config, **kwargs))

"""Distillation settings: one frozen dataclass for the run, one for the weighted loss terms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from slimgen.errors import ConfigError
from slimgen.evaluate.features import check_training_use, training_extractor
from slimgen.evaluate.selection import Selection
from slimgen.methods import build_config
from slimgen.quantize.configs import LinearQuant
from slimgen.train.loop import check_precision, check_schedule

LOSS_TERMS = ("output", "feature", "perceptual", "adversarial", "vae_recon", "vae_kl")
OUTPUT_LOSSES = ("l1", "l2")
ADVERSARIAL_REAL = ("data", "teacher")  # what the distillation's discriminator calls real
AUTO_ADVERSARIAL = 0.05  # what ``adversarial: auto`` becomes where the term is available (bench/results/defaults.md)


@dataclass(frozen=True)
class DistillLosses:
    """Weights of the distillation loss terms (each >= 0, at least one > 0).

    ``output``: L1 or L2 (``output_loss``) between student and teacher images (B, C, H, W) on
    the same latents. ``feature``: mean squared error between teacher feature maps and student
    feature maps mapped by learned 1x1 conv adapters (GAN Compression, Li et al. 2020), one per
    pair of layers with the same spatial size. ``perceptual``: mean squared distance between
    the evaluation classifier's features (B, d) of student and teacher images. ``adversarial``:
    non-saturating GAN loss against a discriminator initialised from the teacher's. VAE only:
    ``vae_recon`` mean squared error of real images encoded by the teacher's encoder and decoded
    by the student; ``vae_kl`` KL(q(z|x) || N(0, I)) per image, which makes the encoder (a copy
    of the teacher's) train with the student as a VAE. Terms not given keep their defaults:
    ``output`` 10, ``adversarial`` ``"auto"`` (``AUTO_ADVERSARIAL`` = 0.05 when the teacher has a
    discriminator and real images are given, else 0; :meth:`resolved`), all others 0: the tuned
    setting of bench/results/defaults.md (the L1 term must outweigh the adversarial one).
    ``adversarial_real``: what the discriminator learns to call real, ``data`` (the real images) or
    ``teacher`` (the teacher's images of the step's own latents, already computed for the output term):
    with ``teacher`` the term needs no real images, so a data-free run keeps it (``adversarial: auto``
    is then 0.05 wherever the teacher has a discriminator). ``adversarial_every``: the adversarial term (the
    discriminator's step and the student's term) runs on every N-th step only, weighted N times there
    (:class:`slimgen.train.objectives.Adversarial`): the discriminator is most of a step's cost on a small
    generator, so N = 3 makes a step about twice as fast (bench/results/adversarial_every_speed.md), though the
    default recipe's 12,000 steps then score worse (bench/results/adversarial_every.md). ``adversarial_auto``: the
    weight ``adversarial: auto`` takes where the term is available (default ``AUTO_ADVERSARIAL``; recipes/frontier.yaml
    uses 0.1, bench/results/frontier_s38.md), so a recipe can set it and still run on a generator-only folder.
    """

    output: float = 10.0
    feature: float = 0.0
    perceptual: float = 0.0
    adversarial: float | Literal["auto"] = "auto"
    vae_recon: float = 0.0
    vae_kl: float = 0.0
    output_loss: Literal["l1", "l2"] = "l1"
    adversarial_real: Literal["data", "teacher"] = "data"
    adversarial_every: int = 1
    adversarial_auto: float = AUTO_ADVERSARIAL

    def __post_init__(self) -> None:
        auto = self.adversarial_auto
        if not isinstance(auto, int | float) or isinstance(auto, bool) or auto < 0:
            raise ConfigError(f"adversarial_auto must be a number >= 0, got {auto!r}")
        for name in LOSS_TERMS:
            value = getattr(self, name)
            if name == "adversarial" and value == "auto":
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                allowed = " or auto" if name == "adversarial" else ""
                raise ConfigError(f"distillation loss weight {name} must be a number{allowed}, got {value!r}")
            if value < 0:
                raise ConfigError(f"distillation loss weight {name} must be >= 0, got {value}")
        if all(getattr(self, name) in (0, "auto") for name in LOSS_TERMS):  # auto may resolve to 0
            raise ConfigError(f"all distillation loss weights are 0; set at least one of {', '.join(LOSS_TERMS)} > 0")
        if self.output_loss not in OUTPUT_LOSSES:
            raise ConfigError(f"output_loss must be one of {', '.join(OUTPUT_LOSSES)}; got {self.output_loss!r}")
        if self.adversarial_real not in ADVERSARIAL_REAL:
            raise ConfigError(f"adversarial_real must be one of {', '.join(ADVERSARIAL_REAL)}; got "
                              f"{self.adversarial_real!r}")
        every = self.adversarial_every
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"adversarial_every must be a whole number >= 1, got {every!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DistillLosses:
        """Build from a mapping (a recipe's ``losses:``); an unknown key is a ConfigError."""
        known = [f.name for f in fields(cls)]
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ConfigError(f"unknown distillation loss {unknown[0]!r}; known: {', '.join(known)}")
        return cls(**values)

    def active(self) -> tuple[str, ...]:
        """Names of the terms with a weight > 0 (``adversarial: auto`` counts once :meth:`resolved`)."""
        return tuple(name for name in LOSS_TERMS if not isinstance(getattr(self, name), str) and getattr(self, name) > 0)

    def resolved(self, *, discriminator: bool, real_images: bool) -> DistillLosses:
        """These weights with ``adversarial: auto`` made a number: ``adversarial_auto`` when the teacher has a
        ``discriminator`` and the term has its real class (``real_images`` given, or ``adversarial_real:
        teacher``), else 0 (a weight the user set is kept)."""
        if self.adversarial != "auto":
            return self
        available = discriminator and (real_images or self.adversarial_real == "teacher")
        return replace(self, adversarial=float(self.adversarial_auto) if available else 0.0)


@dataclass(frozen=True)
class Distillation:
    """Train a student generator to imitate a teacher generator.

    ``epochs`` x ``steps_per_epoch`` batches of ``batch_size`` (None = one pass over the data),
    Adam with ``lr`` and ``betas`` for the student, its feature adapters and the discriminator;
    ``lr_schedule`` ``constant`` or ``cosine`` (decayed per epoch towards 0, see
    :func:`slimgen.train.loop.lr_factor`).
    ``losses`` may be a :class:`DistillLosses` or a mapping of its fields. ``extractor``: the
    TRAINING feature extractor whose features the ``perceptual`` term compares
    (``zoo:fmnist-classifier``, ``random:1`` for any image size, or a classifier folder of your
    own); a reporting extractor (``zoo:fmnist-eval``, ``inception``, ``random``/``random:0``, or
    any folder with the same weights) is a ConfigError here, so a recipe cannot train in the
    space its results are reported in. ``select``: how the best epoch is picked
    (:class:`slimgen.evaluate.selection.Selection`, also in a training space). ``precision``:
    the training step's arithmetic, ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32``,
    ``bf16`` (autocast; weights, optimizer state and losses stay float32) or ``fast`` (bf16 where the
    device has bf16 units, fp32 elsewhere: :func:`slimgen.train.loop.resolve_precision`). ``ema``: the decay of an
    exponential moving average of the student's weights (:class:`slimgen.train.trainer.EMA`; the
    average is what is scored and kept), 0 = off. ``fake_quant``: quantization-aware distillation, the
    student's weights fake-quantized with this linear scheme while it trains (straight-through; a
    :class:`slimgen.quantize.LinearQuant` or a mapping of its settings, e.g. ``{bits: 8, layer_bits:
    {net.0: 4}}``), so it ends on that grid and a following ``quantize`` with the same weights loses
    nothing more; None = float training. ``discriminator_lr``: the learning rate of the discriminator
    that trains alongside (adversarial term), on the same schedule; None = ``lr``. Defaults (lr 5e-4
    on a cosine, the losses' defaults): the tuned setting of bench/results/defaults.md.
    """

    epochs: int = 5
    lr: float = 5e-4
    batch_size: int = 64
    steps_per_epoch: int | None = None
    seed: int = 0
    losses: DistillLosses = field(default_factory=DistillLosses)
    betas: tuple[float, float] = (0.5, 0.999)
    extractor: str = "zoo:fmnist-classifier"
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    select: Selection = field(default_factory=Selection)
    precision: Literal["auto", "fp32", "bf16", "fast"] = "auto"
    ema: float = 0.0
    fake_quant: LinearQuant | None = None
    discriminator_lr: float | None = None

    def __post_init__(self) -> None:
        check_precision(self.precision)
        d_lr = self.discriminator_lr
        if d_lr is not None and (isinstance(d_lr, bool) or not isinstance(d_lr, int | float) or not d_lr > 0):
            raise ConfigError(f"discriminator_lr must be a positive number (or null: the student's lr), got {d_lr!r}")
        if isinstance(self.fake_quant, Mapping):  # the recipe's checker, so a bad key is named with the allowed ones
            object.__setattr__(self, "fake_quant", build_config(LinearQuant, dict(self.fake_quant), "fake_quant"))
        if self.fake_quant is not None and not isinstance(self.fake_quant, LinearQuant):
            raise ConfigError(f"fake_quant must be a LinearQuant, a mapping of its settings or None, "
                              f"got {type(self.fake_quant).__name__}")
        if isinstance(self.ema, bool) or not isinstance(self.ema, int | float) or not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be a number in [0, 1) (0 = off, e.g. 0.999), got {self.ema!r}")
        if isinstance(self.select, Mapping):
            object.__setattr__(self, "select", Selection(**self.select))
        if not isinstance(self.select, Selection):
            raise ConfigError(f"select must be a Selection or a mapping of its settings, got {type(self.select).__name__}")
        check_training_use(self.extractor, "distillation's perceptual term")
        if isinstance(self.losses, Mapping):
            object.__setattr__(self, "losses", DistillLosses.from_dict(self.losses))
        if not isinstance(self.losses, DistillLosses):
            raise ConfigError(f"losses must be a DistillLosses or a mapping of loss weights, got {type(self.losses).__name__}")
        check_schedule(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch,
                       lr_schedule=self.lr_schedule)
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        object.__setattr__(self, "betas", betas)
        if self.losses.perceptual > 0 and self.extractor != "auto" and not str(self.extractor).startswith("zoo:"):
            training_extractor(self.extractor, what="distillation's perceptual term")  # a folder: its weights, now

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Distillation:
        """Build from a mapping (a recipe step); an unknown key is a ConfigError."""
        known = [f.name for f in fields(cls)]
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ConfigError(f"unknown distillation setting {unknown[0]!r}; known: {', '.join(known)}")
        return cls(**values)

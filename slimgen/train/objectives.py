"""What the one trainer minimises: the loss maths (once) and the objectives built from it.

An objective looks at one :class:`Batch` and returns named loss terms; the trainer adds them up
with the objective's weights and takes one optimiser step (see :mod:`slimgen.train.trainer`).
An objective may own trained helpers (a discriminator with its own optimiser, feature adapters,
an encoder) that the trainer checkpoints and wraps in DDP with the model.

| objective | terms | used by |
| --- | --- | --- |
| :class:`Adversarial` | non-saturating GAN loss (its discriminator steps first) | GAN training, fine-tuning, distillation |
| :class:`TeacherMatch` | output distance, adapted feature maps, perceptual (training space only) | fine-tuning, distillation |
| :class:`EncoderTerms` | reconstruction through an encoder (reparameterised), KL to N(0, I) | VAE training, VAE distillation |
| :class:`Penalty` | any ``penalty(model) -> scalar`` (sparsity training) | fine-tuning |
| :class:`CrossEntropy` | classification with random horizontal flips | classifier training |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.inputs import GenInputs, run
from slimgen.train.distributed import shard_draw

if TYPE_CHECKING:
    from slimgen.train.trainer import Trainer


# --- the maths, once ------------------------------------------------------------------------------

def output_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``l2``) difference of images (B, C, H, W); a scalar."""
    if kind == "l1":
        return F.l1_loss(student, teacher)
    if kind == "l2":
        return F.mse_loss(student, teacher)
    raise ValueError(f"output distance must be l1 or l2, got {kind!r}")


def feature_distance(adapted: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                     pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Mean over pairs of MSE(adapted student map (B, C_t, H, W), teacher map (B, C_t, H, W)).

    ``pairs``: (key in ``adapted``, teacher layer) pairs; the student maps (B, C_s, H, W) were
    mapped to the teacher's channels by the 1x1 adapters before.
    """
    terms = [F.mse_loss(adapted[key], teacher[t]) for key, t in pairs]
    return torch.stack(terms).mean()


def perceptual_distance(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of classifier features (B, d)."""
    return F.mse_loss(student_features, teacher_features)


def generator_adversarial(logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss -log sigmoid(D(G(z))) from discriminator logits (B,)."""
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of real (B,) as 1 and fake (B,) as 0."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent (B, nz), averaged over the batch."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / mu.shape[0]


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mu + eps * exp(logvar / 2): a posterior sample (B, nz) that gradients flow through."""
    return mu + eps * torch.exp(0.5 * logvar)


def gaussian_recon(recon: torch.Tensor, images: torch.Tensor, sigma: float) -> torch.Tensor:
    """-log N(images; recon, sigma^2 I) up to a constant, summed over pixels, averaged over the batch (B, C, H, W)."""
    return F.mse_loss(recon, images, reduction="sum") / (2 * sigma**2 * images.shape[0])


@contextmanager
def tap(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the submodules ``names`` while the context is open.

    The yielded dict maps name -> the latest output (B, C, H, W) of that module (with its graph).
    """
    store: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            store[name] = output
        return hook

    handles = [model.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def input_gradients_only(module: nn.Module) -> Iterator[None]:
    """Inside, ``module``'s parameters take no gradient: a forward builds a graph that reaches its inputs only.
    Each parameter's own ``requires_grad`` comes back afterwards."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# --- one batch, as the objectives see it ---------------------------------------------------------------

@dataclass
class Batch:
    """One step's data: real ``images`` (B, C, H, W) and ``labels`` (B,) or None, the epoch generator ``rng``,
    and, when the trainer samples, the generator ``inputs`` (z (B, *latent_shape), y) and its images
    ``fake`` (B, C, H, W) with the tapped feature maps ``maps`` of the (plain) model. ``logs``: floats an
    objective reports besides its terms (the discriminator's loss). ``teacher_out``: a frozen teacher's images
    of ``inputs``, by ``id(teacher)``, computed once per step (:meth:`teacher_images`)."""

    trainer: Trainer
    images: torch.Tensor
    labels: torch.Tensor | None
    rng: torch.Generator
    inputs: GenInputs | None = None
    fake: torch.Tensor | None = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    logs: dict[str, float] = field(default_factory=dict)
    teacher_out: dict[int, torch.Tensor] = field(default_factory=dict)  # id(teacher) -> its images of ``inputs``

    def module(self, name: str) -> nn.Module:
        """The trained module ``name`` as the step must call it (its DDP wrapper under torchrun)."""
        return self.trainer.train_modules[name]

    def teacher_images(self, teacher: nn.Module) -> torch.Tensor:
        """``teacher``'s images (B, C, H, W) of this step's inputs, computed once per step (no gradient)."""
        if id(teacher) not in self.teacher_out:
            _, inputs = self.generated()
            with torch.no_grad():
                self.teacher_out[id(teacher)] = run(teacher, inputs)
        return self.teacher_out[id(teacher)]

    def generated(self) -> tuple[torch.Tensor, GenInputs]:
        if self.fake is None or self.inputs is None:
            raise ConfigError("this objective needs the model's samples: build the trainer with sample=True")
        return self.fake, self.inputs


class Objective:
    """Named loss terms of one batch. ``weights``: term -> weight in the total (a missing term: 1).
    ``modules``: trained helpers the trainer checkpoints, wraps and steps with the model's optimizer
    (``modules``) or with their own (``optimizers``, stepped by the objective itself). ``taps``: layers of
    the trained model whose outputs the objective reads from ``batch.maps``. ``log_weighted``: report
    terms after weighting (fine-tuning's ``g_teacher``), else before (distillation)."""

    weights: dict[str, float]
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    taps: list[str]
    log_weighted: bool = False

    def __init__(self) -> None:
        self.weights, self.modules, self.optimizers, self.taps = {}, {}, {}, []

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class Adversarial(Objective):
    """Non-saturating GAN loss against ``discriminator`` (B, C, H, W) -> logits (B,), trained here with Adam.

    Each call first steps the discriminator on real images vs. the detached fakes (``loss_d`` in the
    logs), then returns the generator's term ``name``. ``conditional``: the discriminator also takes
    the labels, ``D(x, y)`` (real images with their data labels, fakes with their drawn ones). The
    discriminator sees images in the trainer's contract's ``image_range`` (what it was trained on), real
    and fake alike; the trainer works in [-1, 1]. ``real_from``: a frozen generator (a distillation's
    teacher) whose images of the step's own inputs are the real class instead of the batch's images
    (with their drawn labels); its forward is shared with :class:`TeacherMatch` when both run.
    ``every``: the whole term (the discriminator's step and the generator's term) runs on every ``every``-th
    optimisation step only (the trainer's ``global_step`` 0, N, 2N, ..., so a resumed run skips the same steps),
    with ``weight`` x ``every`` there: the same weight on average at a fraction of the discriminator's cost
    (lazy regularization, StyleGAN2's trick for its R1 term). On the other steps it returns no term.
    """

    def __init__(self, discriminator: nn.Module, *, lr: float, betas: tuple[float, float], name: str = "adversarial",
                 weight: float = 1.0, conditional: bool = False, real_from: nn.Module | None = None,
                 every: int = 1) -> None:
        super().__init__()
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"the adversarial term's every must be a whole number >= 1, got {every!r}")
        self.name, self.conditional, self.real_from, self.every = name, conditional, real_from, every
        self.weights = {name: weight * every}
        self.modules = {"discriminator": discriminator}
        self.optimizers = {"discriminator": torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.trainer.global_step % self.every:
            return {}
        fake, inputs = batch.generated()
        d, opt = batch.module("discriminator"), self.optimizers["discriminator"]
        real_cond, fake_cond = ((batch.labels,), (inputs.y,)) if self.conditional else ((), ())
        real = batch.images
        if self.real_from is not None:
            real, real_cond = batch.teacher_images(self.real_from), fake_cond
        elif self.conditional and batch.labels is None:
            raise ValueError("conditional GAN training needs labels")
        spec = batch.trainer.inputs
        real, fake = (real, fake) if spec is None else (spec.to_native(real), spec.to_native(fake))
        loss_d = discriminator_loss(d(real, *real_cond), d(fake.detach(), *fake_cond))
        opt.zero_grad(set_to_none=True)
        loss_d.backward()
        opt.step()
        batch.logs["loss_d"] = loss_d.item()
        # The generator's term needs gradients to the images only: the discriminator's own would be computed and
        # then dropped (its optimizer clears them before its next step). The plain module, never its DDP wrapper,
        # whose reducer would wait for gradients that never come.
        plain = batch.trainer.modules["discriminator"]
        with input_gradients_only(plain):
            logits = plain(fake, *fake_cond)
        return {self.name: generator_adversarial(logits)}


class TeacherMatch(Objective):
    """The model imitates a frozen ``teacher`` on the same inputs (one teacher forward for all terms).

    ``output``: ``output_loss`` distance of the images. ``feature``: MSE of teacher maps and the model's
    tapped maps mapped by 1x1 ``adapters`` (trained with the model) for each of ``pairs``
    (:class:`slimgen.distill.features.FeaturePair`-like: ``key``, ``student``, ``teacher``).
    ``perceptual``: MSE of ``extractor`` features (B, d) of images mapped to [0, 1]; the extractor must
    be a training-space one (checked by the caller that builds it). ``names`` renames terms in the logs.
    """

    def __init__(self, teacher: nn.Module, *, output: float = 1.0, output_loss: str = "l1", feature: float = 0.0,
                 pairs: list | None = None, adapters: nn.Module | None = None, perceptual: float = 0.0,
                 extractor: nn.Module | None = None, names: dict[str, str] | None = None,
                 log_weighted: bool = False) -> None:
        super().__init__()
        self.teacher, self.output_loss, self.pairs, self.extractor = teacher, output_loss, list(pairs or []), extractor
        self.names = {"output": "output", "feature": "feature", "perceptual": "perceptual", **(names or {})}
        self.weights = {self.names[k]: w for k, w in (("output", output), ("feature", feature),
                                                      ("perceptual", perceptual))}
        self.log_weighted = log_weighted
        check_training_extractor(extractor)
        if self.pairs and adapters is not None:
            self.modules = {"adapters": adapters}
        self.taps = [p.student for p in self.pairs]

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        fake, inputs = batch.generated()
        w, n = self.weights, self.names
        terms: dict[str, torch.Tensor] = {}
        with torch.no_grad(), tap(self.teacher, [p.teacher for p in self.pairs]) as teacher_maps:
            target = run(self.teacher, inputs)  # (B, C, H, W)
        batch.teacher_out[id(self.teacher)] = target  # an adversarial term whose real class they are reuses them
        if w[n["output"]] > 0:
            terms[n["output"]] = output_distance(fake, target, self.output_loss)
        if w[n["feature"]] > 0:
            adapted = batch.module("adapters")({p.key: batch.maps[p.student] for p in self.pairs})  # (B, C_t, H, W)
            terms[n["feature"]] = feature_distance(adapted, teacher_maps, [(p.key, p.teacher) for p in self.pairs])
        if w[n["perceptual"]] > 0 and self.extractor is not None:
            with torch.no_grad():
                target_features = self.extractor((target + 1) / 2)  # (B, d)
            terms[n["perceptual"]] = perceptual_distance(self.extractor((fake + 1) / 2), target_features)
        return terms


def check_training_extractor(extractor: nn.Module | None) -> None:
    """The train-vs-report rule for objectives built by hand too: a perceptual term takes only a slimgen
    FeatureExtractor of the TRAINING role (``zoo:fmnist-classifier``, ``random:1``, ...); ConfigError else."""
    if extractor is None:
        return
    from slimgen.evaluate.features import FeatureExtractor, _refuse_reporting

    if not isinstance(extractor, FeatureExtractor):
        raise ConfigError("the perceptual term needs a slimgen FeatureExtractor of the training role "
                          "(slimgen.evaluate.features.training_extractor)")
    _refuse_reporting(extractor, "a training objective's perceptual term")


class EncoderTerms(Objective):
    """Real images (B, C, H, W) through an encoder to (mu, logvar) (B, nz) each, then reconstruction of a
    reparameterised sample by the trained model and the KL of the posterior to N(0, I).

    ``recon``: its weight; ``sigma`` set: the Gaussian negative log-likelihood (:func:`gaussian_recon`,
    VAE training), else the mean squared error (distillation). ``kl``: its weight. ``trained``: the encoder
    steps with the model (it joins ``modules``), else it stays frozen. The noise is drawn from the epoch
    generator only when the reconstruction term is on.
    """

    def __init__(self, encoder: nn.Module, *, recon: float = 1.0, kl: float = 1.0, sigma: float | None = None,
                 trained: bool = True, names: tuple[str, str] = ("recon", "kl")) -> None:
        super().__init__()
        self.encoder, self.sigma, self.trained, self.names = encoder, sigma, trained, names
        self.weights = {names[0]: recon, names[1]: kl}
        if trained:
            self.modules = {"encoder": encoder}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        encoder = batch.module("encoder") if self.trained else self.encoder
        with torch.set_grad_enabled(self.trained):
            mu, logvar = encoder(batch.images)  # (B, nz) each
        terms: dict[str, torch.Tensor] = {}
        recon_name, kl_name = self.names
        if self.weights[recon_name] > 0:
            eps = shard_draw(lambda n: torch.randn(n, *mu.shape[1:], generator=batch.rng), mu.shape[0])
            if self.sigma is not None:
                recon = batch.module("generator")(reparameterize(mu, logvar, eps.to(mu.device)))
                terms[recon_name] = gaussian_recon(recon, batch.images, self.sigma)
            else:
                recon = batch.module("generator")(reparameterize(mu, logvar, eps.to(mu)))
                terms[recon_name] = output_distance(recon, batch.images, "l2")
        if self.weights[kl_name] > 0:
            terms[kl_name] = kl_to_prior(mu, logvar)
        return terms


class Penalty(Objective):
    """``fn(model) -> scalar`` on the plain trained model (e.g. an L1 sparsity penalty), as term ``name``."""

    def __init__(self, fn: Callable[[nn.Module], torch.Tensor], *, name: str = "penalty") -> None:
        super().__init__()
        self.fn, self.name = fn, name
        self.weights = {name: 1.0}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {self.name: self.fn(batch.trainer.model)}


class CrossEntropy(Objective):
    """Cross-entropy of the trained classifier on images with random horizontal flips (p = 0.5, drawn from
    the epoch generator): cheap augmentation that Fashion-MNIST tolerates."""

    def __init__(self, *, name: str = "loss") -> None:
        super().__init__()
        self.name = name
        self.weights = {name: 1.0}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.labels is None:
            raise ValueError("classifier training needs labels")
        images = batch.images
        flip = shard_draw(lambda n: torch.rand(n, generator=batch.rng), images.shape[0]) < 0.5
        images = torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)
        return {self.name: F.cross_entropy(batch.module(batch.trainer.model_key)(images), batch.labels)}

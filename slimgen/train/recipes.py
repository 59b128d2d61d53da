"""Training configs (one frozen dataclass each) and the ``train`` verb that writes a model folder."""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import singledispatch
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from slimgen.data import ImageSet, load_dataset
from slimgen.errors import ConfigError
from slimgen.io import write_atomic
from slimgen.models import (
    ConditionalDCGANDiscriminator,
    ConditionalDCGANGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
    ImageClassifier,
    InputSpec,
    ModelBundle,
    VAEDecoder,
    VAEEncoder,
    save_folder,
)
from slimgen.train import distributed
from slimgen.train.loop import LoopSettings, resolve_device, run_epochs
from slimgen.train.tasks import ClassifierTask, ConditionalGANTask, GANTask, VAETask


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class DCGANTraining:
    dataset: str = "fashion-mnist"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-4
    latent_dim: int = 64
    generator_widths: list[int] | None = None
    discriminator_widths: list[int] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("latent_dim", self.latent_dim)


@dataclass(frozen=True)
class ConditionalDCGANTraining(DCGANTraining):
    """A class-conditional DCGAN (:mod:`slimgen.models.cdcgan`) on a labelled data set: DCGANTraining's
    settings (10 epochs by default) plus the label's.

    ``num_classes`` None: one more than the largest label in the data. ``embed_dim``: size of
    the label embedding concatenated to the latent.
    """

    epochs: int = 10
    embed_dim: int = 16
    num_classes: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("embed_dim", self.embed_dim)
        if self.num_classes is not None and not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise ConfigError(f"num_classes must be an integer >= 2 or None (from the labels), got {self.num_classes!r}")


@dataclass(frozen=True)
class VAETraining:
    dataset: str = "fashion-mnist"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    latent_dim: int = 16
    sigma: float = 0.4
    seed: int = 0

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("sigma", self.sigma)


CLASSIFIER_ARCHS = ("classifier", "classifier_resnet")


@dataclass(frozen=True)
class ClassifierTraining:
    dataset: str = "fashion-mnist"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    class_names: list[str] = field(default_factory=list)
    arch: str = "classifier"  # or "classifier_resnet" (ResidualClassifier: an independent second design)

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        if self.arch not in CLASSIFIER_ARCHS:
            raise ConfigError(f"classifier arch must be one of {', '.join(CLASSIFIER_ARCHS)}, got {self.arch!r}")


def _card(title: str, config: Any, history: list[dict[str, float]], seconds: float, extra: str = "") -> str:
    last = history[-1] if history else {}
    lines = [
        f"# {title}", "",
        f"- command: `{' '.join(shlex.quote(a) for a in sys.argv)}`",
        f"- config: `{asdict(config)}`",
        f"- seed: {config.seed}",
        f"- trained: finished {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}; "
        f"{sum(h.get('seconds', 0.0) for h in history) / 60:.1f} min of training over {len(history)} epochs "
        f"(this call: {seconds / 60:.1f} min)",
        f"- machine: {platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads, torch {torch.__version__}",
        f"- last epoch: {', '.join(f'{k}={v:.4g}' for k, v in last.items())}",
    ]
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def _finish(bundle: ModelBundle, out: Path, config: Any, history: list[dict[str, float]], t0: float, title: str,
            extra: str = "") -> ModelBundle:
    """Record the step and, on rank 0 only (the only process without torchrun), write the folder."""
    for m in bundle.parts.values():
        m.eval()
    step = {"step": "train", "config": asdict(config), "epochs": config.epochs}
    if distributed.world_size() > 1:
        step["processes"] = distributed.world_size()
    bundle.with_step(step)
    if distributed.is_main():
        save_folder(bundle, out, card=_card(title, config, history, time.perf_counter() - t0, extra),
                    files={"history.json": history}, keep=("checkpoint",))
    distributed.barrier()
    return bundle


@singledispatch
def train(config: Any, *, out: str | Path, resume: bool = False, device: str = "auto",
          data: ImageSet | None = None, steps_per_epoch: int | None = None, sync_batchnorm: bool = True,
          precision: str = "auto") -> ModelBundle:
    """Train the model ``config`` describes; writes a checkpoint per epoch and the model folder ``out``.

    Under torchrun every process calls this with the same arguments; ``config.batch_size`` is
    the global batch and rank 0 alone writes ``out``. ``sync_batchnorm`` and ``precision``: see
    :func:`slimgen.train.loop.run_epochs`.
    """
    raise ConfigError(f"no training for {type(config).__name__}")


def _prepare(config: Any, data: ImageSet | None, out: str | Path) -> tuple[ImageSet, Path]:
    data = data if data is not None else load_dataset(config.dataset, "train")
    torch.manual_seed(config.seed)
    return data, Path(out)


@train.register
def _(config: DCGANTraining, *, out: str | Path, resume: bool = False, device: str = "auto",
      data: ImageSet | None = None, steps_per_epoch: int | None = None, sync_batchnorm: bool = True,
      precision: str = "auto") -> ModelBundle:
    data, out = _prepare(config, data, out)
    c, h, _ = data.image_shape
    dev = resolve_device(device)
    gk = {"nz": config.latent_dim, "channels": c, "image_size": h, "widths": config.generator_widths}
    dk = {"channels": c, "image_size": h, "widths": config.discriminator_widths}
    g, d = DCGANGenerator(**gk).to(dev), DCGANDiscriminator(**dk).to(dev)
    task = GANTask(g, d, inputs=config.latent_dim, lr=config.lr)
    t0 = time.perf_counter()

    def snapshot(epoch: int) -> dict[str, float]:
        """Keep the generator of every epoch, to show when more epochs stop helping."""
        snap = out / "checkpoint" / "snapshots" / f"generator-{epoch:03d}.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in g.state_dict().items()}
        write_atomic(snap, lambda p: save_file(state, str(p)))
        return {}

    history = run_epochs(task, data, LoopSettings(config.epochs, config.batch_size, config.seed, steps_per_epoch),
                         checkpoint_dir=out / "checkpoint", resume=resume, device=dev,
                         sync_batchnorm=sync_batchnorm, precision=precision, desc="dcgan",
                         on_epoch_end=snapshot)
    bundle = ModelBundle.from_modules("gan", {"generator": g.cpu(), "discriminator": d.cpu()},
                                      {"generator": gk, "discriminator": dk}, latent_dim=config.latent_dim,
                                      image_shape=data.image_shape, meta={"dataset": data.name})
    return _finish(bundle, out, config, history, t0, "DCGAN")


@train.register
def _(config: ConditionalDCGANTraining, *, out: str | Path, resume: bool = False, device: str = "auto",
      data: ImageSet | None = None, steps_per_epoch: int | None = None, sync_batchnorm: bool = True,
      precision: str = "auto") -> ModelBundle:
    data, out = _prepare(config, data, out)
    if data.labels is None:
        raise ConfigError(f"{data.name}: conditional GAN training needs labels (class sub-folders, "
                          "an IDX labels file or 'labels' in the .npz)")
    found = int(data.labels.max()) + 1
    num_classes = config.num_classes or found
    if found > num_classes or int(data.labels.min()) < 0:
        raise ConfigError(f"{data.name}: labels run from {int(data.labels.min())} to {found - 1}, "
                          f"outside [0, {num_classes}) (num_classes={num_classes})")
    c, h, _ = data.image_shape
    dev = resolve_device(device)
    gk = {"nz": config.latent_dim, "num_classes": num_classes, "embed_dim": config.embed_dim, "channels": c,
          "image_size": h, "widths": config.generator_widths}
    dk = {"num_classes": num_classes, "channels": c, "image_size": h, "widths": config.discriminator_widths}
    g, d = ConditionalDCGANGenerator(**gk).to(dev), ConditionalDCGANDiscriminator(**dk).to(dev)
    task = ConditionalGANTask(g, d, latent_dim=config.latent_dim, num_classes=num_classes, lr=config.lr)
    t0 = time.perf_counter()
    history = run_epochs(task, data, LoopSettings(config.epochs, config.batch_size, config.seed, steps_per_epoch),
                         checkpoint_dir=out / "checkpoint", resume=resume, device=dev,
                         sync_batchnorm=sync_batchnorm, precision=precision, desc="cdcgan")
    bundle = ModelBundle.from_modules("gan", {"generator": g.cpu(), "discriminator": d.cpu()},
                                      {"generator": gk, "discriminator": dk},
                                      inputs=InputSpec((config.latent_dim,), num_classes=num_classes),
                                      image_shape=data.image_shape, meta={"dataset": data.name})
    return _finish(bundle, out, config, history, t0, "Class-conditional DCGAN")


@train.register
def _(config: VAETraining, *, out: str | Path, resume: bool = False, device: str = "auto",
      data: ImageSet | None = None, steps_per_epoch: int | None = None, sync_batchnorm: bool = True,
      precision: str = "auto") -> ModelBundle:
    data, out = _prepare(config, data, out)
    c, h, _ = data.image_shape
    dev = resolve_device(device)
    kw = {"nz": config.latent_dim, "channels": c, "image_size": h}
    enc, dec = VAEEncoder(**kw).to(dev), VAEDecoder(**kw).to(dev)
    task = VAETask(enc, dec, lr=config.lr, sigma=config.sigma)
    t0 = time.perf_counter()
    history = run_epochs(task, data, LoopSettings(config.epochs, config.batch_size, config.seed, steps_per_epoch),
                         checkpoint_dir=out / "checkpoint", resume=resume, device=dev,
                         sync_batchnorm=sync_batchnorm, precision=precision, desc="vae")
    bundle = ModelBundle.from_modules("vae", {"generator": dec.cpu(), "encoder": enc.cpu()},
                                      {"generator": kw, "encoder": kw}, latent_dim=config.latent_dim,
                                      image_shape=data.image_shape, meta={"dataset": data.name})
    return _finish(bundle, out, config, history, t0, "Convolutional VAE")


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: ImageSet, *, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (labels required), in [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for s in range(0, len(data), batch_size):
        logits = model(data.images[s:s + batch_size].to(device))  # (B, classes)
        correct += int((logits.argmax(1).cpu() == data.labels[s:s + batch_size]).sum())  # type: ignore[index]
    return correct / len(data)


@train.register
def _(config: ClassifierTraining, *, out: str | Path, resume: bool = False, device: str = "auto",
      data: ImageSet | None = None, steps_per_epoch: int | None = None, sync_batchnorm: bool = True,
      precision: str = "auto") -> ModelBundle:
    data, out = _prepare(config, data, out)
    if data.labels is None:
        raise ConfigError(f"{data.name}: classifier training needs labels")
    test = load_dataset(config.dataset, "test") if config.dataset in ("fashion-mnist", "digits") else data
    c, h, _ = data.image_shape
    num_classes = int(data.labels.max()) + 1
    kw = {"channels": c, "image_size": h, "num_classes": num_classes}
    dev = resolve_device(device)
    from slimgen.models.registry import build

    model = (ImageClassifier(**kw) if config.arch == "classifier" else build(config.arch, kw)).to(dev)
    task = ClassifierTask(model, lr=config.lr)
    t0 = time.perf_counter()

    def evaluate_epoch(epoch: int) -> dict[str, float]:
        return {"test_accuracy": accuracy(model, test)}

    history = run_epochs(task, data, LoopSettings(config.epochs, config.batch_size, config.seed, steps_per_epoch),
                         checkpoint_dir=out / "checkpoint", resume=resume, device=dev,
                         sync_batchnorm=sync_batchnorm, precision=precision, desc="classifier",
                         on_epoch_end=evaluate_epoch)
    acc = accuracy(model.cpu(), test)
    bundle = ModelBundle.from_modules("classifier", {"classifier": model}, {"classifier": kw},
                                      image_shape=data.image_shape,
                                      meta={"dataset": data.name, "test_accuracy": acc, "class_names": config.class_names})
    return _finish(bundle, out, config, history, t0, "Image classifier",
                   f"Test accuracy on {test.name} ({len(test)} images): {acc:.4f}")

"""``slimgen distill`` (registered on the shared app)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from slimgen.cli.app import OVERWRITE, app, name_values, out_folder
from slimgen.cli.prune import _card

if TYPE_CHECKING:
    from slimgen.data import ImageSet
    from slimgen.distill import Distillation
    from slimgen.models import ModelBundle

FMNIST_SHAPE = (1, 28, 28)


def _say_unused(teacher: ModelBundle, config: Distillation, data: ImageSet | None) -> None:
    """Say once which loss terms this run cannot use, and why."""
    off = []
    if data is None:
        needing = "the VAE terms need" if config.losses.adversarial_real == "teacher" else \
            "the adversarial and VAE terms need"
        off.append("no real images (--dataset not given): distilling data-free from the teacher's outputs on drawn "
                   f"latents; {needing} real images and are off")
    if teacher.discriminator is None and config.losses.adversarial == 0:
        off.append("the teacher has no discriminator: the adversarial term is unavailable")
    for line in off:
        typer.secho(f"distill: {line}", err=True)


def _weight(text: str) -> float | str:
    """``auto`` or a number (a loss weight given on the command line)."""
    from slimgen.errors import ConfigError

    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--adversarial must be a number >= 0 or auto, got {text!r}") from None


@app.command("distill")
def distill_cmd(
    teacher: str = typer.Argument(..., help="teacher model folder or zoo:NAME"),
    out: Path = typer.Option(..., "--out", help="model folder to write (checkpoints in OUT/checkpoint)"),
    student: str | None = typer.Option(None, help="student model folder or zoo:NAME (e.g. the pruned teacher)"),
    width: float | None = typer.Option(None, help="instead of --student: the teacher's architecture with this "
                                                  "fraction of channels in every layer (any class)"),
    student_init: str = typer.Option("random", "--init", help="--width student: random (fresh weights) or strongest "
                                     "(the teacher's channels of largest L1 norm, with their weights)"),
    epochs: int = typer.Option(5, min=1),
    lr: float = typer.Option(5e-4),
    lr_schedule: str = typer.Option("cosine", help="cosine (decayed per epoch towards 0) or constant"),
    batch_size: int = typer.Option(64, min=1, help="global batch (split across processes under torchrun)"),
    steps_per_epoch: int | None = typer.Option(None, help="batches per epoch (default: one pass over the data)"),
    output: float = typer.Option(10.0, help="weight of the output (image) distance to the teacher"),
    output_loss: str = typer.Option("l1", help="output distance: l1 or l2"),
    feature: float = typer.Option(0.0, help="weight of the feature-map distance (1x1 adapters)"),
    perceptual: float = typer.Option(0.0, help="weight of the classifier-feature distance"),
    adversarial: str = typer.Option("auto", help="weight of the GAN loss against the teacher's discriminator; auto: "
                                    "0.05 when the teacher has one (real images: --dataset, default fashion-mnist), else 0"),
    adversarial_real: str = typer.Option("data", help="what the discriminator learns to call real: data (real "
                                         "images) or teacher (the teacher's images of the same latents: no data "
                                         "needed, so a data-free run keeps the adversarial term)"),
    adversarial_every: int = typer.Option(1, min=1, help="run the adversarial term (the discriminator's step and "
                                          "the student's term) on every N-th step only, weighted N times there: the "
                                          "discriminator is most of a step's cost"),
    vae_recon: float = typer.Option(0.0, help="VAE teacher: weight of the reconstruction of real images"),
    vae_kl: float = typer.Option(0.0, help="VAE teacher: weight of the encoder's KL (trains the encoder too)"),
    eval_n: int = typer.Option(2000, help="samples of the per-epoch FID that picks the best epoch"),
    select: bool = typer.Option(True, "--select/--no-select", help="keep the best epoch by FID (else the last)"),
    select_reference: str = typer.Option(
        "auto", help="selection reference: auto (the data set if its images match, else the teacher's samples), "
        "teacher, or a data set"),
    select_extractor: str = typer.Option("auto", help="selection features: auto or a training extractor"),
    extractor: str = typer.Option("zoo:fmnist-classifier", help="perceptual term's features: a training extractor "
                                  "(zoo:fmnist-classifier, random:1, a classifier folder)"),
    dataset: str | None = typer.Option(None, help="real images for the adversarial and VAE terms (default: "
                                       "fashion-mnist when those terms are on, else none: data-free)"),
    seed: int = typer.Option(0, help="seed of the data order, latents, adapters and a --width student"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint"),
    device: str = typer.Option("auto", help="cpu, cuda or auto (under torchrun, cuda is cuda:LOCAL_RANK)"),
    threads: int | None = typer.Option(None, min=1, help="torch CPU threads (default: torch's choice)"),
    precision: str = typer.Option("auto", help="training arithmetic: auto (bf16 autocast on CUDA, fp32 on CPU), fp32, "
                                  "bf16 (autocast; weights stay float32), or fast (bf16 where the device has "
                                  "bf16 units: CUDA, AMX/AVX512-BF16 CPUs; fp32 elsewhere)"),
    ema: float = typer.Option(0.0, help="decay of a moving average of the student's weights, which is scored and "
                              "kept (e.g. 0.999); 0 = off"),
    fake_quant: str | None = typer.Option(None, help="quantization-aware distillation: train through these linear "
                                          "weights (int2..int8, per channel), e.g. int8; then quantize the same way"),
    layer_bits: list[str] = typer.Option([], "--layer-bits", help="with --fake-quant: NAME=BITS, a layer's own "
                                         "width (e.g. net.0=4); repeat for several"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Distil a teacher generator into a student; writes a model folder with the best epoch.

    Under ``torchrun --nproc_per_node N -m slimgen distill ...`` the N processes share each
    global batch of BATCH_SIZE (DDP, gloo on CPU, NCCL on CUDA); rank 0 scores the epochs and
    writes OUT.
    """
    import torch

    from slimgen.data import load_dataset
    from slimgen.distill import Distillation, DistillLosses, distill, slim_student
    from slimgen.distill.api import needs_real_images
    from slimgen.errors import ConfigError
    from slimgen.evaluate.selection import Selection
    from slimgen.models import load_folder, save_folder
    from slimgen.quantize import LinearQuant
    from slimgen.quantize.configs import parse_weights
    from slimgen.train.distributed import is_main, teardown
    from slimgen.train.finetune import scorer_for

    if (student is None) == (width is None):
        raise ConfigError("give exactly one of --student (a model folder) and --width (a slimmer copy of the teacher)")
    if threads:
        torch.set_num_threads(threads)
    if layer_bits and fake_quant is None:
        raise ConfigError("--layer-bits applies with --fake-quant (e.g. --fake-quant int8 --layer-bits net.0=4)")
    scheme = None
    if fake_quant is not None:
        scheme = parse_weights(fake_quant)
        if not isinstance(scheme, LinearQuant):
            raise ConfigError(f"--fake-quant takes linear weights int2..int8, got {fake_quant!r}")
        scheme = dataclasses.replace(scheme, layer_bits=name_values(layer_bits, "--layer-bits", "net.0=4", int))
    out_folder(out, overwrite=overwrite, resume=resume)
    losses = DistillLosses(output=output, feature=feature, perceptual=perceptual, adversarial=_weight(adversarial),
                           vae_recon=vae_recon, vae_kl=vae_kl, output_loss=output_loss,  # type: ignore[arg-type]
                           adversarial_real=adversarial_real, adversarial_every=adversarial_every)  # type: ignore[arg-type]
    config = Distillation(epochs=epochs, lr=lr, batch_size=batch_size, steps_per_epoch=steps_per_epoch, seed=seed,
                          losses=losses, lr_schedule=lr_schedule, extractor=extractor,
                          select=Selection(reference=select_reference, extractor=select_extractor, n=eval_n),
                          precision=precision, ema=ema, fake_quant=scheme)  # type: ignore[arg-type]
    teacher_bundle = load_folder(teacher)
    student_bundle = load_folder(student) if student is not None else slim_student(teacher_bundle, width, seed=seed, init=student_init)  # type: ignore[arg-type]
    # best epoch: against the data set if its images match, else the teacher's samples; training space only
    score = scorer_for(config.select, student_bundle, teacher=teacher_bundle,
                       dataset=dataset or "fashion-mnist") if select else None
    real = needs_real_images(config) or (losses.adversarial == "auto" and losses.adversarial_real == "data"
                                         and teacher_bundle.discriminator is not None)
    if dataset is None and real:
        dataset = "fashion-mnist"
    data = load_dataset(dataset, "train") if dataset is not None else None
    if is_main():
        _say_unused(teacher_bundle, config, data)
    t0 = time.perf_counter()
    try:
        result = distill(student_bundle, teacher_bundle, config, data=data, checkpoint_dir=out / "checkpoint",
                         resume=resume, device=device, score=score)
        if is_main():
            last = result.steps[-1]
            save_folder(result, out, card=_card(f"Distilled {teacher}", [
                f"student: {student or f'width x{width}'}", f"config: `{config}`",
                f"best epoch: {last.get('best_epoch')} (score {last.get('best_score', 'n/a')})",
                f"time: {(time.perf_counter() - t0) / 60:.1f} min"]), keep=("checkpoint",))
            typer.echo(f"wrote {out} (best epoch {last.get('best_epoch')}, {time.perf_counter() - t0:.0f} s)")
    finally:
        teardown()

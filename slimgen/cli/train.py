"""``slimgen train``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from slimgen.cli.app import OVERWRITE, app, out_folder


class TrainWhat(StrEnum):
    dcgan = "dcgan"
    cdcgan = "cdcgan"
    vae = "vae"
    classifier = "classifier"


@app.command("train")
def train_cmd(
    what: TrainWhat = typer.Argument(..., help="dcgan, cdcgan (class-conditional, labels from the data set), vae or classifier"),
    out: Path = typer.Option(..., "--out", help="model folder to write (checkpoints go to OUT/checkpoint)"),
    dataset: str = typer.Option("fashion-mnist", help="fashion-mnist, digits, an IDX file, image folder or .npy/.npz"),
    epochs: int = typer.Option(20, min=1),
    batch_size: int = typer.Option(128, min=1),
    lr: float | None = typer.Option(None, help="learning rate (default: the method's own)"),
    latent_dim: int | None = typer.Option(None, help="latent size (dcgan/cdcgan 64, vae 16)"),
    widths: str | None = typer.Option(None, help="dcgan/cdcgan generator widths per level, e.g. 64,32 for 28x28 "
                                                 "(the discriminator mirrors them; default 128,64)"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint"),
    device: str = typer.Option("auto", help="cpu, cuda or auto (under torchrun, cuda is cuda:LOCAL_RANK)"),
    threads: int | None = typer.Option(None, min=1, help="torch CPU threads (default: torch's choice)"),
    steps_per_epoch: int | None = typer.Option(None, min=1, help="batches per epoch (default: one pass)"),
    sync_batchnorm: bool = typer.Option(True, help="under torchrun: BatchNorm statistics over the global batch"),
    precision: str = typer.Option("auto", help="auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16, or fast "
                                  "(bf16 where the device has bf16 units, fp32 elsewhere)"),
    classifier_arch: str = typer.Option("classifier", help="classifier only: classifier or classifier_resnet"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Train a model from scratch into a model folder.

    Under ``torchrun --nproc_per_node N -m slimgen train ...`` the N processes share each global
    batch of BATCH_SIZE (DDP, gloo on CPU, NCCL on CUDA); rank 0 writes OUT.
    """
    import torch

    from slimgen.data.dataset import FASHION_MNIST_CLASSES
    from slimgen.errors import ConfigError
    from slimgen.train import ClassifierTraining, ConditionalDCGANTraining, DCGANTraining, VAETraining, train
    from slimgen.train.distributed import is_main, teardown

    if threads:
        torch.set_num_threads(threads)
    out_folder(out, overwrite=overwrite, resume=resume)
    common: dict = {"dataset": dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed}
    if lr is not None:
        common["lr"] = lr
    if widths is not None:
        if what not in (TrainWhat.dcgan, TrainWhat.cdcgan):
            raise ConfigError(f"--widths applies to dcgan and cdcgan, not {what.value}")
        try:
            gw = [int(w) for w in widths.split(",")]
        except ValueError:
            raise ConfigError(f"--widths must be comma-separated integers such as 64,32, got {widths!r}") from None
        common["generator_widths"], common["discriminator_widths"] = gw, gw[::-1]
    if what is TrainWhat.classifier:
        names = list(FASHION_MNIST_CLASSES) if dataset in ("fashion-mnist", "fmnist") else []
        config: object = ClassifierTraining(**common, class_names=names, arch=classifier_arch)
    elif what is TrainWhat.cdcgan:
        config = ConditionalDCGANTraining(**common, **({"latent_dim": latent_dim} if latent_dim else {}))
    elif what is TrainWhat.vae:
        config = VAETraining(**common, **({"latent_dim": latent_dim} if latent_dim else {}))
    else:
        config = DCGANTraining(**common, **({"latent_dim": latent_dim} if latent_dim else {}))
    try:
        train(config, out=out, resume=resume, device=device, steps_per_epoch=steps_per_epoch,
              sync_batchnorm=sync_batchnorm, precision=precision)
        if is_main():
            typer.echo(f"wrote {out}")
    finally:
        teardown()

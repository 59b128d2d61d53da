"""``slimgen train``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from slimgen.cli.app import app


class TrainWhat(str, Enum):
    dcgan = "dcgan"
    vae = "vae"
    classifier = "classifier"


@app.command("train")
def train_cmd(
    what: TrainWhat = typer.Argument(..., help="dcgan, vae or classifier"),
    out: Path = typer.Option(..., "--out", help="model folder to write (checkpoints go to OUT/checkpoint)"),
    dataset: str = typer.Option("fashion-mnist", help="fashion-mnist, digits, an IDX file, image folder or .npy/.npz"),
    epochs: int = typer.Option(20, min=1),
    batch_size: int = typer.Option(128, min=1),
    lr: float | None = typer.Option(None, help="learning rate (default: the method's own)"),
    latent_dim: int | None = typer.Option(None, help="latent size (dcgan 64, vae 16)"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint"),
    device: str = typer.Option("auto", help="cpu, cuda or auto"),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: torch's choice)"),
) -> None:
    """Train a model from scratch into a model folder."""
    import torch

    from slimgen.data.dataset import FASHION_MNIST_CLASSES
    from slimgen.train import ClassifierTraining, DCGANTraining, VAETraining, train

    if threads:
        torch.set_num_threads(threads)
    common: dict = {"dataset": dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed}
    if lr is not None:
        common["lr"] = lr
    if what is TrainWhat.classifier:
        names = list(FASHION_MNIST_CLASSES) if dataset in ("fashion-mnist", "fmnist") else []
        config: object = ClassifierTraining(**common, class_names=names)
    elif what is TrainWhat.vae:
        config = VAETraining(**common, **({"latent_dim": latent_dim} if latent_dim else {}))
    else:
        config = DCGANTraining(**common, **({"latent_dim": latent_dim} if latent_dim else {}))
    train(config, out=out, resume=resume, device=device)
    typer.echo(f"wrote {out}")

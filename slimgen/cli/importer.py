"""``slimgen import``: a generator trained elsewhere becomes a model folder (registered on the shared app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from slimgen.cli.app import OVERWRITE, app, out_folder


def _json_kwargs(text: str | None, option: str) -> dict[str, Any]:
    from slimgen.errors import ConfigError

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option}: not valid JSON ({exc.msg} at character {exc.pos}): {text!r}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: expected a JSON object of constructor kwargs, got {text!r}")
    return value


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"100,1,1"`` -> (100, 1, 1); None stays None."""
    from slimgen.errors import ConfigError

    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError as exc:
        raise ConfigError(f"--latent-shape: expected positive integers separated by commas (e.g. 100,1,1), got {text!r}") from exc
    if not shape or min(shape) < 1:
        raise ConfigError(f"--latent-shape: expected positive integers separated by commas (e.g. 100,1,1), got {text!r}")
    return shape


def parse_range(text: str | None) -> tuple[float, float] | None:
    """``--image-range LO,HI`` -> (lo, hi); None when not given; ConfigError for anything else."""
    from slimgen.errors import ConfigError
    from slimgen.models.inputs import check_range

    if text is None:
        return None
    try:
        values = [float(s) for s in text.split(",")]
    except ValueError as exc:
        raise ConfigError(f"--image-range: expected two numbers LO,HI (e.g. 0,1), got {text!r}") from exc
    try:
        return check_range(values)
    except ConfigError as exc:
        raise ConfigError(f"--image-range: {exc}") from None


@app.command("import")
def import_cmd(
    weights: Path = typer.Argument(..., help="generator weights: .safetensors, or .pt/.pth/.tar (weights_only)"),
    arch: str = typer.Option(..., "--arch", help="the generator class, module:Class (importable), or a zoo architecture"),
    out: Path = typer.Option(..., "--out", help="model folder to write"),
    kwargs: str | None = typer.Option(None, "--kwargs", help="constructor kwargs as a JSON object"),
    key: str | None = typer.Option(None, "--key", help="the state dict's key in a checkpoint dict (e.g. netG_state_dict)"),
    latent_shape: str | None = typer.Option(None, "--latent-shape", help="one latent's shape, e.g. 100,1,1 "
                                            "(default: read off the first layer)"),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1, help="class-conditional: G(z, y), y in [0, N)"),
    labels: str | None = typer.Option(None, "--labels", help="how its forward takes y: index (int64 (B,)) or one-hot "
                                      "(float (B, N)); default: index if that runs, else one-hot"),
    image_range: str | None = typer.Option(None, "--image-range", help="LO,HI: the range the generator's images were "
                                           "trained in, e.g. 0,255; default 0,1 after a final sigmoid, "
                                           "else -1,1"),
    discriminator: Path | None = typer.Option(None, "--discriminator", help="discriminator weights (optional)"),
    discriminator_arch: str | None = typer.Option(None, "--discriminator-arch", help="its class, module:Class"),
    discriminator_kwargs: str | None = typer.Option(None, "--discriminator-kwargs", help="its kwargs as JSON"),
    discriminator_key: str | None = typer.Option(None, "--discriminator-key", help="its key in a checkpoint dict"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="allow full unpickling (runs code from the file)"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Import a generator (and optionally its discriminator) trained elsewhere as a slimgen model folder."""
    from slimgen.cli.prune import _card
    from slimgen.models import save_folder
    from slimgen.models.importer import import_model

    out_folder(out, overwrite=overwrite)
    bundle = import_model(
        weights, arch, kwargs=_json_kwargs(kwargs, "--kwargs"), key=key, latent_shape=parse_shape(latent_shape),
        num_classes=num_classes, image_range=parse_range(image_range), discriminator=discriminator, discriminator_arch=discriminator_arch,
        discriminator_kwargs=_json_kwargs(discriminator_kwargs, "--discriminator-kwargs"),
        discriminator_key=discriminator_key, trust_pickle=trust_pickle,
        labels=None if labels is None else labels.replace("-", "_"))
    assert bundle.inputs is not None
    save_folder(bundle, out, card=_card(f"Imported {weights.name}", [
        f"generator: {arch}", f"inputs: {bundle.inputs.describe()}", f"images: {bundle.image_shape} (C, H, W)",
        f"discriminator: {discriminator_arch or 'none'}"]))
    typer.echo(f"wrote {out}: {arch}, inputs {bundle.inputs.describe()}, images {tuple(bundle.image_shape)} (C, H, W)"
               + ("" if discriminator is None else ", with its discriminator"))
    if bundle.steps[-1].get("num_classes_from"):
        typer.echo(f"class-conditional: {bundle.inputs.num_classes} classes, read off its "
                   f"{bundle.steps[-1]['num_classes_from']}; pass --num-classes if that is wrong")
    if image_range is None and bundle.inputs.image_range != (-1.0, 1.0):
        typer.echo("its last operation is a sigmoid: read as images in [0, 1]; pass --image-range if they are not")
    elif image_range is None and bundle.steps[-1]["probe_range"][0] >= 0:
        typer.echo("read as images in [-1, 1], but no output of the probe was below 0: if its images are in [0, 1] "
                   "(e.g. (tanh(x) + 1) / 2), import again with --image-range 0,1")

"""``slimgen quantize`` commands (registered on the shared app)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from slimgen.cli.app import OVERWRITE, app, name_values, out_folder


@app.command("quantize")
def quantize_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME"),
    out: Path = typer.Option(..., "--out", help="model folder to write"),
    weights: str = typer.Option("int8", help="int8, int4, int2 (int2..int8), kmeans4, kmeans2 (kmeans1..8), naive8, naive4"),
    layer_bits: list[str] = typer.Option([], "--layer-bits", help="int* weights: NAME=BITS, this layer's own width "
                                         "(mixed precision, e.g. net.0=5: the latent layer that holds most weights; "
                                         "'<first>=5' names it in any model); repeat for several"),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="one scale per output channel"),
    symmetric: bool = typer.Option(True, "--symmetric/--asymmetric", help="zero point 0, or an integer zero point"),
    scale: str = typer.Option("minmax", help="clipping range: minmax, percentile or mse"),
    scale_type: str = typer.Option("float", help="int* scales: float (float32) or pow2 (powers of two, fixed point "
                                   "q = round(w * 2^p); with --activations the activation scales too)"),
    init: str = typer.Option("linear", help="k-means initialisation: linear or density"),
    entropy: str = typer.Option("none", help="lossless coding of the integer weight codes (int*, kmeans*) on disk: none, lzma or zlib"),
    activations: str | None = typer.Option(
        None, help="int8: also quantize activations (static, calibrated); none: weights only; default: int8 with "
        "--weights int8 and no QAT (bench/results/defaults.md), else none"),
    calibration: int = typer.Option(512, help="number of calibration latents for --activations"),
    observer: str = typer.Option("percentile", help="activation observer: percentile, minmax, moving_average, histogram"),
    percentile: float = typer.Option(99.5, help="activation range percentile of the percentile observer"),
    float_output_layer: bool = typer.Option(True, "--float-output-layer/--int8-output-layer",
                                            help="--activations: keep the image output layer in fp32"),
    qat_epochs: int = typer.Option(0, min=0, help="quantization-aware fine-tuning epochs (0 = post-training)"),
    qat_steps: int | None = typer.Option(None, help="batches per QAT epoch (default: one pass over the data)"),
    qat_batch_size: int = typer.Option(64, min=1, help="QAT global batch (split across processes under torchrun)"),
    qat_teacher_weight: float = typer.Option(1.0, min=0.0, help="QAT: weight of the L1 pull towards the float "
                                             "model's images on the same latents (0 = adversarial loss only)"),
    dataset: str = typer.Option("fashion-mnist", help="real images for QAT"),
    resume: bool = typer.Option(False, "--resume", help="QAT: continue from OUT/checkpoint"),
    device: str = typer.Option("cpu", help="QAT: cpu, cuda or auto (under torchrun, cuda is cuda:LOCAL_RANK)"),
    threads: int | None = typer.Option(None, min=1, help="torch CPU threads (default: torch's choice)"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Quantize a model's generator weights (and activations) into a new model folder.

    With ``--qat-epochs`` the quantization-aware fine-tuning checkpoints every epoch into
    OUT/checkpoint and runs under ``torchrun --nproc_per_node N -m slimgen quantize ...`` as
    ``slimgen finetune`` does (DDP, QAT_BATCH_SIZE split across processes; rank 0 writes OUT).
    """
    import torch

    from slimgen.errors import ConfigError
    from slimgen.models import load_folder, save_folder
    from slimgen.quantize import LinearQuant, QuantAwareTraining, Quantization, quantize
    from slimgen.quantize.configs import parse_activations, parse_weights
    from slimgen.train.distributed import is_main, teardown

    if threads:
        torch.set_num_threads(threads)
    out_folder(out, overwrite=overwrite, resume=resume)

    scheme = parse_weights(weights, per_channel=per_channel, symmetric=symmetric, scale=scale, init=init,
                           entropy_coding=entropy, scale_type=scale_type)
    if layer_bits:
        if not isinstance(scheme, LinearQuant):
            raise ConfigError(f"--layer-bits applies to int* weights, not {weights!r}")
        scheme = dataclasses.replace(scheme, layer_bits=name_values(layer_bits, "--layer-bits", "net.0=5", int))
    if activations is None:  # the default: int8 activations with int8 weights after training (defaults.md)
        activations = "int8" if weights == "int8" and not layer_bits and not qat_epochs else "none"
    if activations == "none":
        activations = None
    act = parse_activations(activations, observer=observer, calibration=calibration, percentile=percentile,
                            float_output_layer=float_output_layer, entropy_coding=entropy, per_channel=per_channel,
                            symmetric=symmetric, scale=scale, scale_type=scale_type)
    if act is not None and qat_epochs:
        raise ConfigError("--activations int8 is post-training: it does not combine with --qat-epochs")
    # --weights int8 (the default) with --activations int8: the int8 weights activation quantization stores;
    # any other scheme meets Quantization's one rule
    config: object = Quantization(weights=None if act is not None and weights == "int8" and not layer_bits else scheme,
                                  activations=act)
    train: dict = {}
    if qat_epochs:
        from slimgen.data import load_dataset

        config = QuantAwareTraining(weights=scheme, epochs=qat_epochs, steps_per_epoch=qat_steps,
                                    batch_size=qat_batch_size, teacher_weight=qat_teacher_weight)
        train = {"data": load_dataset(dataset, "train"), "checkpoint_dir": out / "checkpoint", "resume": resume,
                 "device": device}
    try:
        bundle = quantize(load_folder(model), config, **train)
        if not is_main():
            return
        save_folder(bundle, out, card=f"# quantized\n\n`slimgen quantize {model} --weights {weights}` -> {config}\n",
                    keep=("checkpoint",))
        from slimgen.models import weight_bytes

        typer.echo(f"wrote {out} ({weight_bytes(out):,} bytes in model.safetensors)")
    finally:
        teardown()

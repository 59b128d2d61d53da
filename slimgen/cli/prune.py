"""``slimgen prune`` and ``slimgen finetune`` (registered on the shared app)."""

from __future__ import annotations

import shlex
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from slimgen.cli.app import OVERWRITE, app, name_values, out_folder

if TYPE_CHECKING:
    from slimgen.models import ModelBundle


class Method(StrEnum):
    channels = "channels"
    magnitude = "magnitude"
    random = "random"
    gradient = "gradient"
    threshold = "threshold"
    kernel = "kernel"
    lowrank = "lowrank"


def _config(method: Method, ratio: float, importance: str, scope: str | None, threshold: float | None,
            seed: int, loss: str = "auto", ignore: tuple[str, ...] = (), layer_ratio: tuple[str, ...] = (),
            kernel_size: int | None = None, layers: tuple[str, ...] = (), rank: int | None = None,
            energy: float | None = None, side: str = "input") -> object:
    """The method's dataclass; its ``__post_init__`` rejects bad values before any work."""
    from slimgen.errors import ConfigError
    from slimgen.prune import (
        ChannelPruning,
        GradientPruning,
        KernelPruning,
        LowRankFactorization,
        MagnitudePruning,
        RandomPruning,
        ThresholdPruning,
    )

    if kernel_size is not None and method is not Method.kernel:
        raise ConfigError("--kernel-size applies to --method kernel only")
    if layers and method not in (Method.kernel, Method.lowrank):
        raise ConfigError("--layer applies to --method kernel and lowrank only")
    if (rank is not None or energy is not None or side != "input") and method is not Method.lowrank:
        raise ConfigError("--rank, --energy and --side apply to --method lowrank only")
    if method is Method.lowrank:
        return LowRankFactorization(rank=rank, energy=energy, side=side, layers=layers)  # type: ignore[arg-type]
    if method is Method.kernel:
        return KernelPruning(size=2 if kernel_size is None else kernel_size, layers=layers)

    scoped = {"scope": scope} if scope else {}
    target = {"sparsity": None, "threshold": threshold} if threshold is not None else {"sparsity": ratio}
    if (ignore or layer_ratio) and method is not Method.channels:
        raise ConfigError("--ignore and --layer-ratio apply to --method channels only")
    per_layer = name_values(layer_ratio, "--layer-ratio", "net.3=0.8", float)
    if method is Method.channels:
        return ChannelPruning(ratio=ratio, importance=importance, loss=loss, ignore=ignore,  # type: ignore[arg-type]
                              layer_ratios=per_layer, **scoped)
    if method is Method.magnitude:
        return MagnitudePruning(**target, **scoped)  # type: ignore[arg-type]
    if method is Method.random:
        return RandomPruning(sparsity=ratio, seed=seed, **scoped)  # type: ignore[arg-type]
    if method is Method.gradient:
        return GradientPruning(**target, loss=loss, **scoped)  # type: ignore[arg-type]
    return ThresholdPruning(threshold=threshold if threshold is not None else 0.01)


def _card(title: str, lines: list[str]) -> str:
    cmd = " ".join(shlex.quote(a) for a in sys.argv)
    return "\n".join([f"# {title}", "", f"- command: `{cmd}`", *[f"- {line}" for line in lines]]) + "\n"


def _cost_row(bundle: ModelBundle, part: str) -> list[str]:
    """params, non-zero params, MACs per image and stored bytes of ``bundle.parts[part]`` (saved bundles only)."""
    import torch

    from slimgen.evaluate.cost import measure_cost

    gen = part == "generator" and bundle.inputs is not None
    cost = measure_cost(bundle.parts[part], bundle.inputs if gen else torch.zeros(2, *bundle.image_shape),  # type: ignore[arg-type]
                        folder=bundle.path, latency=False, part=part)
    return [f"{v:,}" for v in (cost.params, cost.nonzero_params, cost.macs, cost.weight_bytes or 0)]


def _cost_table(part: str, rows: dict[str, ModelBundle]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(part, "params", "non-zero", "MACs / image", "stored bytes")
    for name, bundle in rows.items():
        table.add_row(name, *_cost_row(bundle, part))
    Console().print(table)


@app.command("prune")
def prune_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME"),
    out: Path = typer.Option(..., "--out", help="model folder to write"),
    method: Method = typer.Option(Method.channels, help="channels or kernel (structured), lowrank (layers factorized "
                                  "by truncated SVD), or an unstructured method"),
    ratio: float = typer.Option(0.5, help="fraction of channels (channels) or of weights (others) to remove"),
    importance: str = typer.Option("auto", help="channels: auto (taylor with calibration inputs, else l1), taylor, "
                                 "l1, l2, bn_scale or activation"),
    scope: str | None = typer.Option(None, help="channels: uniform|global; others: layerwise|global"),
    loss: str = typer.Option("auto", help="loss of the gradient and channels-taylor scores: auto, adversarial, "
                             "output_norm or output_projection"),
    threshold: float | None = typer.Option(None, help="magnitude/gradient: prune scores below this instead of --ratio"),
    part: str = typer.Option("generator", help="which part of the model folder to prune"),
    seed: int = typer.Option(0, help="seed of random pruning"),
    ignore: list[str] = typer.Option([], "--ignore", help="channels: a layer (its name in the model, e.g. "
                                     "block1.conv2) whose output channels stay whole; repeat for several"),
    layer_ratio: list[str] = typer.Option([], "--layer-ratio", help="channels: NAME=RATIO, this layer's own ratio "
                                          "instead of --ratio (e.g. net.3=0.8, or '<first>=0.5' for the first layer the "
                                          "latent reaches); repeat for several"),
    kernel_size: int | None = typer.Option(None, "--kernel-size", help="kernel: taps per spatial dim to keep "
                                           "(default 2: a stride-2 4x4 transposed convolution keeps a quarter of "
                                           "its MACs)"),
    rank: int | None = typer.Option(None, "--rank", help="lowrank: the rank of every factorized layer"),
    energy: float | None = typer.Option(None, "--energy", help="lowrank: per layer, the smallest rank keeping this "
                                        "fraction of the weight's squared singular values (default 0.95)"),
    side: str = typer.Option("input", "--side", help="lowrank: input (1x1 map of the input channels first) or "
                             "output (1x1 map to the output channels last)"),
    layer: list[str] = typer.Option([], "--layer", help="kernel / lowrank: a layer to crop or factorize (repeatable; "
                                    "default: every layer that can be, except the image layer); '<first>' is the "
                                    "first layer the latent reaches, '<last>' the image layer, in any model"),
    resume: bool = typer.Option(False, "--resume", help="skip if OUT already holds this exact pruning step"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Prune one part of a model folder; writes a model folder that sample/evaluate read.

    Channel pruning goes through the model's own code: a forward that reshapes with literal
    widths (``view(-1, 256, 7, 7)``) is captured as a graph whose reshapes follow the pruned
    width, recorded in config.json so loading rebuilds it from the same class.
    """
    from slimgen.models import load_folder, save_folder
    from slimgen.pipeline.runner import holds_step
    from slimgen.prune import prune

    config = _config(method, ratio, importance, scope, threshold, seed, loss, tuple(ignore), tuple(layer_ratio),
                     kernel_size, tuple(layer), rank, energy, side)
    if resume and holds_step(out, config, part=part):
        typer.echo(f"{out} already holds this pruning step; nothing to do")
        return
    out_folder(out, overwrite=overwrite)
    bundle = load_folder(model)
    t0 = time.perf_counter()
    pruned = prune(bundle, config, part=part)
    seconds = time.perf_counter() - t0
    uses_loss = method is Method.gradient or (method is Method.channels and importance in ("taylor", "auto"))
    if uses_loss and loss == "auto" and part == "generator" and bundle.discriminator is None:
        typer.secho(f"prune: {model} has no discriminator, so the adversarial loss is unavailable: importance from "
                    f"the generator's own outputs ({pruned.steps[-1].get('loss_used')}), data-free", err=True)
    save_folder(pruned, out, card=_card(f"Pruned {model}", [f"method: `{config}`", f"part: {part}",
                                                              f"time: {seconds:.2f} s"]))
    _cost_table(part, {str(model): bundle, str(out): pruned})
    typer.echo(f"wrote {out} ({seconds:.2f} s)")


@app.command("rotate-latent")
def rotate_latent_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME (a GAN generator; not a VAE)"),
    out: Path = typer.Option(..., "--out", help="model folder to write"),
    steps: int = typer.Option(1500, help="optimisation steps of the rotation"),
    lr: float = typer.Option(0.01, help="Adam learning rate of the rotation"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Rotate the latent basis before unstructured pruning: the same distribution of images, a sparser latent layer.

    OUT's generator draws for latent z the image MODEL draws for Qz (Q orthogonal), so its FID,
    KID and precision/recall are MODEL's; Q concentrates the latent layer's weights, so pruning
    OUT removes less. Prune, fine-tune and distil OUT against OUT, not against MODEL.
    """
    from slimgen.models import load_folder, save_folder
    from slimgen.prune import LatentRotation, rotate_latent

    config = LatentRotation(steps=steps, lr=lr)
    out_folder(out, overwrite=overwrite)
    t0 = time.perf_counter()
    rotated = rotate_latent(load_folder(model), config, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - t0
    step = rotated.steps[-1]
    energy = (f"largest 10% of {step['layer']}'s weights hold {step['top10_energy_before']:.1%} of its squared norm "
              f"before, {step['top10_energy_after']:.1%} after")
    save_folder(rotated, out, card=_card(f"{model} with its latent basis rotated",
                                         [f"method: `{config}`", energy, f"rotation: {step['rotation']}",
                                          f"time: {seconds:.2f} s"]))
    typer.echo(f"wrote {out} ({seconds:.2f} s): {energy}; prune and distil it against {out}, not {model}")


@app.command("finetune")
def finetune_cmd(
    model: str = typer.Argument(..., help="model folder or zoo:NAME to fine-tune (its generator)"),
    out: Path = typer.Option(..., "--out", help="model folder to write (checkpoints in OUT/checkpoint)"),
    teacher: str | None = typer.Option(None, help="teacher model folder: its discriminator, and L1 target"),
    epochs: int = typer.Option(5, min=1),
    teacher_weight: float = typer.Option(100.0, help="weight of the L1 loss to --teacher's images on the same latents "
                                         "(0 = adversarial loss only; unused without --teacher)"),
    lr: float = typer.Option(2e-4),
    lr_schedule: str = typer.Option("constant", help="constant, or cosine: decayed per epoch towards 0"),
    batch_size: int = typer.Option(64, min=1),
    steps_per_epoch: int | None = typer.Option(None, help="batches per epoch (default: one pass over the data)"),
    eval_n: int = typer.Option(2000, help="samples of the per-epoch FID that picks the best epoch"),
    select: bool = typer.Option(True, "--select/--no-select", help="keep the best epoch by FID (else the last)"),
    select_reference: str = typer.Option(
        "auto", help="selection reference: auto (the data set if its images match, else the teacher's samples), "
        "teacher, or a data set"),
    select_extractor: str = typer.Option("auto", help="selection features: auto or a training extractor"),
    l1_weight: float = typer.Option(0.0, help="sparsity training: L1 penalty on weights"),
    l1_bn: float = typer.Option(0.0, help="sparsity training: L1 penalty on BatchNorm scales (network slimming)"),
    gradual_sparsity: float | None = typer.Option(None, help="gradual magnitude pruning to this sparsity (cubic)"),
    gradual_end_step: int | None = typer.Option(None, help="step at which gradual pruning reaches its sparsity"),
    dataset: str = typer.Option("fashion-mnist"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/checkpoint"),
    device: str = typer.Option("auto", help="cpu, cuda or auto (under torchrun, cuda is cuda:LOCAL_RANK)"),
    threads: int | None = typer.Option(None, min=1, help="torch CPU threads (default: torch's choice)"),
    overwrite: bool = OVERWRITE,
) -> None:
    """Adversarially fine-tune a (pruned) generator; writes a model folder with the best epoch.

    Under ``torchrun --nproc_per_node N -m slimgen finetune ...`` the N processes share each
    global batch of BATCH_SIZE (DDP, gloo on CPU, NCCL on CUDA); rank 0 scores the epochs and
    writes OUT.
    """
    import torch

    from slimgen.data import load_dataset
    from slimgen.evaluate.selection import Selection
    from slimgen.models import load_folder, save_folder
    from slimgen.prune import GradualPruning, SparsityTraining, penalty_for, prune_gradually
    from slimgen.prune.schedules import fit_to_run
    from slimgen.train.distributed import is_main, teardown
    from slimgen.train.finetune import FineTuning, finetune, scorer_for

    if threads:
        torch.set_num_threads(threads)
    out_folder(out, overwrite=overwrite, resume=resume)
    config = FineTuning(epochs=epochs, lr=lr, batch_size=batch_size, teacher_weight=teacher_weight,
                        steps_per_epoch=steps_per_epoch, seed=seed, eval_n=eval_n, lr_schedule=lr_schedule,
                        select=Selection(reference=select_reference, extractor=select_extractor))  # type: ignore[arg-type]
    penalty = penalty_for(SparsityTraining(l1_weight=l1_weight, l1_bn=l1_bn)) if l1_weight or l1_bn else None
    bundle = load_folder(model)
    teacher_bundle = load_folder(teacher) if teacher else None
    score = scorer_for(config, bundle, teacher=teacher_bundle, dataset=dataset) if select else None
    data = load_dataset(dataset, "train")
    t0 = time.perf_counter()
    common = {"data": data, "teacher": teacher_bundle, "score": score, "checkpoint_dir": out / "checkpoint",
              "resume": resume, "device": device}
    try:
        if gradual_sparsity is not None:
            batches = steps_per_epoch or max(1, len(data) // batch_size)
            schedule = fit_to_run(GradualPruning(sparsity=gradual_sparsity), epochs * batches, end_step=gradual_end_step)
            result = prune_gradually(bundle, schedule, config, **common)
        else:
            result = finetune(bundle, config, penalty=penalty, **common)
        if is_main():
            last = result.steps[-1]
            save_folder(result, out, card=_card(f"Fine-tuned {model}", [
                f"config: `{config}`", f"teacher: {teacher}", f"best epoch: {last.get('best_epoch')} "
                f"(score {last.get('best_score', 'n/a')})", f"time: {(time.perf_counter() - t0) / 60:.1f} min"]),
                keep=("checkpoint",))
            typer.echo(f"wrote {out} (best epoch {last.get('best_epoch')}, {time.perf_counter() - t0:.0f} s)")
    finally:
        teardown()


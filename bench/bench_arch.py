"""Channel pruning through a user's code: a generator with a hard-coded reshape vs the same code edited.

    .venv/bin/python bench/bench_arch.py [--epochs 20] [--batch-size 128] [--ft-epochs 3] [--ft-steps 300]
        [-n 10000] [--seeds 0 1 2] [--threads 1] [--teacher-only] [--no-workaround]

A user-style generator (``bench/user_generators.py``: Linear -> ``view(-1, 128, 7, 7)`` -> two
ConvTranspose2d, 64-dim latents, the zoo DCGAN's shape) is trained by slimgen on Fashion-MNIST
(adversarial training from random weights with the zoo DCGAN discriminator architecture,
``slimgen.train.finetune``, ``--epochs`` passes over the data in batches of ``--batch-size``, the
last epoch kept). The trained weights then go into three rows, each pruned with
``ChannelPruning(ratio=0.5, importance="l1")`` and fine-tuned the same way (``--ft-epochs`` x
``--ft-steps`` batches, the teacher's discriminator, L1 to the teacher's images weighted 10, the
same seed):

- ``hard-coded``: the class as written; slimgen prunes it through its rewritten graph;
- ``edited``: the same weights in the class edited to ``view(B, -1, 7, 7)``;
- ``hard-coded, fc ignored``: the workaround before issue 15 (``ignore=("fc",)``), the trunk unpruned
  (left out with ``--no-workaround``).

Every row: parameters, MACs per image (FlopCounterMode), bytes of the generator's tensors in
model.safetensors, FID and KID in the reporting feature space (``zoo:fmnist-eval``;
``slimgen.evaluate.evaluate``, ``-n`` samples on each latent seed of ``--seeds`` against the 10,000
Fashion-MNIST test images), the training-space FID beside it, and seconds of fine-tuning. No loss
or selection uses either feature space. Resumable: training checkpoints every epoch and finished
folders are reused (``--work``). Writes bench/results/arch.md and arch.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the user's module (bench/user_generators.py)

from slimgen.data import load_dataset
from slimgen.evaluate import evaluate
from slimgen.evaluate.cost import count_macs, count_params, stored_bytes
from slimgen.models import DCGANDiscriminator, InputSpec, ModelBundle, load_folder, save_folder, trust_code
from slimgen.models.folder import WEIGHTS
from slimgen.models.registry import build
from slimgen.prune import ChannelPruning, prune
from slimgen.train import has_checkpoint
from slimgen.train.finetune import FineTuning, finetune

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
HARD, EDITED = "user_generators:HardcodedReshapeG", "user_generators:EditedReshapeG"
LATENT = 64


def _bundle(arch: str, state: dict[str, torch.Tensor] | None, disc: torch.nn.Module) -> ModelBundle:
    g = build(arch, {"latent_dim": LATENT})
    if state is not None:
        g.load_state_dict(state)
    return ModelBundle.from_modules("gan", {"generator": g.eval(), "discriminator": disc},
                                    {"generator": {"latent_dim": LATENT}, "discriminator": {"channels": 1, "image_size": 28}},
                                    inputs=InputSpec(latent_shape=(LATENT,)), image_shape=(1, 28, 28))


def _tune(start: ModelBundle, config: FineTuning, data: object, ckpt: Path, teacher: ModelBundle | None = None) -> ModelBundle:
    """``finetune`` with one checkpoint per epoch in ``ckpt``, resumed when one is there (no selection: ``score=None``)."""
    return finetune(start, config, data=data, teacher=teacher, score=None, checkpoint_dir=ckpt,
                    resume=has_checkpoint(ckpt))


def _teacher(args: argparse.Namespace, data: object) -> ModelBundle:
    folder = args.work / "teacher"
    if (folder / "config.json").is_file():
        return load_folder(folder)
    torch.manual_seed(0)
    start = _bundle(HARD, None, DCGANDiscriminator(channels=1, image_size=28))
    # adversarial training from random weights, the zoo DCGAN's settings (batch 128, lr 2e-4, betas (0.5, 0.999))
    config = FineTuning(epochs=args.epochs, batch_size=args.batch_size, steps_per_epoch=args.steps, seed=0)
    save_folder(_tune(start, config, data, args.work / "teacher-ckpt"), folder)
    return load_folder(folder)


def _row(name: str, arch: str, ignore: tuple[str, ...], teacher: ModelBundle, args: argparse.Namespace,
         data: object) -> dict[str, object]:
    folder = args.work / name.replace(" ", "-").replace(",", "")
    if not (folder / "config.json").is_file():
        start = _bundle(arch, teacher.generator.state_dict(), teacher.discriminator)
        pruned = prune(start, ChannelPruning(ratio=0.5, importance="l1", ignore=ignore))
        config = FineTuning(epochs=args.ft_epochs, batch_size=args.batch_size, steps_per_epoch=args.ft_steps,
                            teacher_weight=10.0, seed=0)
        save_folder(_tune(pruned, config, data, folder.with_name(folder.name + "-ckpt"), teacher), folder)
    return _measure(name, folder, args)


def _measure(name: str, folder: Path, args: argparse.Namespace) -> dict[str, object]:
    """Cost and quality of one folder; FID/KID in both feature spaces on every seed of ``args.seeds``."""
    bundle = load_folder(folder)
    z = torch.randn(2, LATENT)
    steps = [s for s in bundle.steps if s.get("step") == "finetune"]
    row: dict[str, object] = {
        "row": name, "class": bundle.specs["generator"].arch,
        "graph": "graph" in json.loads((folder / "config.json").read_text())["parts"]["generator"],
        "params": count_params(bundle.generator), "macs": count_macs(bundle.generator, z),
        "bytes": stored_bytes(folder / WEIGHTS, prefix="generator."),
        "seconds": steps[-1]["seconds"] if steps and name != "teacher" else None, "fid": [], "kid": [], "train_fid": []}
    for seed in args.seeds:
        result = evaluate(folder, n=args.n, seed=seed, latency=False, write=False)
        row["fid"].append(result.fid)
        row["kid"].append(result.kid_mean)
        row["train_fid"].append(result.train_fid)
    return row


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _command(args: argparse.Namespace) -> str:
    return (f"python bench/bench_arch.py --epochs {args.epochs} --batch-size {args.batch_size} --ft-epochs "
            f"{args.ft_epochs} --ft-steps {args.ft_steps} -n {args.n} --seeds {' '.join(map(str, args.seeds))} "
            f"--threads {args.threads}" + (" --no-workaround" if args.no_workaround else ""))


def _table(rows: list[dict[str, object]], args: argparse.Namespace, load: tuple[float, float, float]) -> str:
    base = rows[0]
    teacher_epochs = f"{args.epochs} epochs" + (f" x {args.steps} batches" if args.steps else " (all 60,000 images each)")
    lines = [
        "# Channel pruning through a user's code (issue 15)", "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, load average at the end "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min; a shared 2-core machine). "
        f"Command: `{_command(args)}` (resumable; model folders and checkpoints in `{args.work}`).", "",
        f"Teacher: `{HARD}` (Linear -> `view(-1, 128, 7, 7)` -> 2 ConvTranspose2d, latents (B, {LATENT}); the zoo "
        f"DCGAN's shape) trained by slimgen from random weights on Fashion-MNIST: adversarial, {teacher_epochs}, "
        f"batches of {args.batch_size}, lr 2e-4, the zoo DCGAN discriminator, the last epoch kept (nothing selected "
        "it). Each pruned row: `ChannelPruning(ratio=0.5, importance='l1')`, then fine-tuned "
        f"{args.ft_epochs} x {args.ft_steps} batches of {args.batch_size} (the teacher's discriminator, L1 to the "
        "teacher's images x10, seed 0, the last epoch kept).", "",
        f"**FID / KID in the reporting feature space** (`zoo:fmnist-eval`, which no training or selection here "
        f"used): n = {args.n:,} samples per latent seed against the 10,000 Fashion-MNIST test images, mean "
        f"(min-max) over latent seeds {', '.join(map(str, args.seeds))}; KID x 1000. The training-space FID "
        "(`zoo:fmnist-classifier`) is given for comparison with older tables; no loss used it either.", "",
        "The `hard-coded` and `edited` rows should be the same model (MACs, bytes, FID)"
        + ("." if args.no_workaround else "; `fc ignored` is the old workaround of leaving the reshaped Linear and its "
           "128 channels unpruned."), "",
        "| row | class | runs through graph | params | MACs / image | MACs vs teacher | stored bytes | bytes vs teacher "
        "| FID (reporting) | FID vs teacher | KID x1000 (reporting) | FID (training space) | fine-tune s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = statistics.mean(f / t for f, t in zip(r["fid"], base["fid"], strict=True))
        lines.append(
            f"| {r['row']} | `{r['class']}` | {'yes' if r['graph'] else 'no'} | {r['params']:,} | {r['macs']:,} | "
            f"{base['macs'] / r['macs']:.2f}x fewer | {r['bytes']:,} | {base['bytes'] / r['bytes']:.2f}x smaller | "
            f"{_mean(r['fid'])} | {ratio:.3f}x | {_mean([k * 1000 for k in r['kid']])} | {_mean(r['train_fid'])} | "
            f"{'' if r['seconds'] is None else r['seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="teacher epochs")
    parser.add_argument("--steps", type=int, default=None, help="teacher batches per epoch (default: the whole data set)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ft-epochs", type=int, default=3)
    parser.add_argument("--ft-steps", type=int, default=300)
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--teacher-only", action="store_true", help="train (or resume) the teacher and stop")
    parser.add_argument("--no-workaround", action="store_true", help="leave out the `fc ignored` row")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-arch"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trust_code(HARD, EDITED)  # the user's own module, chosen here
    data = load_dataset("fashion-mnist", "train")
    teacher = _teacher(args, data)
    if args.teacher_only:
        return
    rows = [_measure("teacher", args.work / "teacher", args)]
    rows.append(_row("hard-coded", HARD, (), teacher, args, data))
    rows.append(_row("edited", EDITED, (), teacher, args, data))
    if not args.no_workaround:
        rows.append(_row("hard-coded, fc ignored", HARD, ("fc",), teacher, args, data))
    table = _table(rows, args, os.getloadavg())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "arch.json").write_text(json.dumps({"command": _command(args), "rows": rows}, indent=1))
    (RESULTS / "arch.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()

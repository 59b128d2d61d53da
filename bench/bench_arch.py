"""Channel pruning through a user's code: a generator with a hard-coded reshape vs the same code edited.

    .venv/bin/python bench/bench_arch.py [--epochs 4] [--steps 300] [--ft-epochs 2] [-n 5000] [--threads 1]

A user-style generator (``bench/user_generators.py``: Linear -> ``view(-1, 128, 7, 7)`` -> two
ConvTranspose2d, 64-dim latents) is trained by slimgen on Fashion-MNIST (adversarial training from
random weights with the zoo DCGAN discriminator architecture, ``slimgen.train.finetune``,
``--epochs`` x ``--steps`` batches of 64, the last epoch kept). The trained weights then go into
three rows, each pruned with ``ChannelPruning(ratio=0.5, importance="l1")`` and fine-tuned the
same way (``--ft-epochs`` x ``--steps``, the teacher's discriminator, L1 to the teacher's images
weighted 10, the same seed):

- ``hard-coded``: the class as written; slimgen prunes it through its rewritten graph;
- ``edited``: the same weights in the class edited to ``view(B, -1, 7, 7)``;
- ``hard-coded, fc ignored``: the workaround before issue 15 (``ignore=("fc",)``), the trunk unpruned.

Every row: parameters, MACs per image (FlopCounterMode), bytes of the generator's tensors in
model.safetensors, FID and KID (``slimgen.evaluate.evaluate``, classifier feature space, ``-n``
seed-0 samples against the 10,000 Fashion-MNIST test images) and seconds of pruning +
fine-tuning. Writes bench/results/arch.md and arch.json; model folders go to ``--work``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the user's module (bench/user_generators.py)

from slimgen.data import load_dataset
from slimgen.evaluate import evaluate
from slimgen.evaluate.cost import count_macs, count_params, stored_bytes
from slimgen.models import DCGANDiscriminator, InputSpec, ModelBundle, load_folder, save_folder
from slimgen.models.folder import WEIGHTS
from slimgen.models.registry import build
from slimgen.prune import ChannelPruning, prune
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


def _teacher(args: argparse.Namespace, data: object) -> ModelBundle:
    folder = args.work / "teacher"
    if (folder / "config.json").is_file():
        return load_folder(folder)
    torch.manual_seed(0)
    start = _bundle(HARD, None, DCGANDiscriminator(channels=1, image_size=28))
    config = FineTuning(epochs=args.epochs, steps_per_epoch=args.steps, seed=0)
    trained = finetune(start, config, data=data, score=None)  # adversarial training from random weights
    save_folder(trained, folder)
    return load_folder(folder)


def _row(name: str, arch: str, ignore: tuple[str, ...], teacher: ModelBundle, args: argparse.Namespace,
         data: object) -> dict[str, object]:
    t0 = time.perf_counter()
    start = _bundle(arch, teacher.generator.state_dict(), teacher.discriminator)
    pruned = prune(start, ChannelPruning(ratio=0.5, importance="l1", ignore=ignore))
    tuned = finetune(pruned, FineTuning(epochs=args.ft_epochs, steps_per_epoch=args.steps, teacher_weight=10.0, seed=0),
                     data=data, teacher=teacher, score=None)
    seconds = time.perf_counter() - t0
    folder = save_folder(tuned, args.work / name.replace(" ", "-").replace(",", ""))
    return _measure(name, folder, seconds, args)


def _measure(name: str, folder: Path, seconds: float | None, args: argparse.Namespace) -> dict[str, object]:
    bundle = load_folder(folder)
    z = torch.randn(2, LATENT)
    result = evaluate(folder, n=args.n, latency=False, write=False)
    return {"row": name, "class": bundle.specs["generator"].arch, "graph": "graph" in json.loads(
        (folder / "config.json").read_text())["parts"]["generator"], "params": count_params(bundle.generator),
        "macs": count_macs(bundle.generator, z), "bytes": stored_bytes(folder / WEIGHTS, prefix="generator."),
        "fid": result.fid, "kid": result.kid_mean, "seconds": None if seconds is None else round(seconds, 1)}


def _table(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    base = rows[0]
    lines = [
        "# Channel pruning through a user's code (issue 15)", "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}. Command: `python bench/bench_arch.py "
        f"--epochs {args.epochs} --steps {args.steps} --ft-epochs {args.ft_epochs} -n {args.n} --threads {args.threads}`.",
        "",
        f"Teacher: `{HARD}` (Linear -> `view(-1, 128, 7, 7)` -> 2 ConvTranspose2d, latents (B, {LATENT})) trained by "
        f"slimgen on Fashion-MNIST for {args.epochs} x {args.steps} batches of 64. Each pruned row: "
        "`ChannelPruning(ratio=0.5, importance='l1')`, then fine-tuned "
        f"{args.ft_epochs} x {args.steps} batches (teacher's discriminator, L1 to the teacher x10, seed 0). "
        f"FID/KID: classifier feature space, {args.n} seed-0 samples vs the 10,000 test images.", "",
        "The teacher is small and trained for minutes on one thread, so its FID is far above the zoo DCGAN's (~113): "
        "read the rows against each other. The `hard-coded` and `edited` rows should be the same model (MACs, bytes, "
        "FID, KID); `fc ignored` is the old workaround of leaving the reshaped Linear and its channels unpruned.", "",
        "| row | class | runs through graph | params | MACs / image | MACs vs teacher | stored bytes | FID | KID | s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['row']} | `{r['class']}` | {'yes' if r['graph'] else 'no'} | {r['params']:,} | {r['macs']:,} | "
                     f"{base['macs'] / r['macs']:.2f}x fewer | {r['bytes']:,} | {r['fid']:.2f} | {r['kid']:.4f} | "
                     f"{'' if r['seconds'] is None else r['seconds']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--ft-epochs", type=int, default=2)
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-arch"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", "train")
    teacher = _teacher(args, data)
    rows = [_measure("teacher", args.work / "teacher", None, args)]
    rows.append(_row("hard-coded", HARD, (), teacher, args, data))
    rows.append(_row("edited", EDITED, (), teacher, args, data))
    rows.append(_row("hard-coded, fc ignored", HARD, ("fc",), teacher, args, data))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "arch.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    (RESULTS / "arch.md").write_text(_table(rows, args))
    print(_table(rows, args))


if __name__ == "__main__":
    main()

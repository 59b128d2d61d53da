"""Every runtime side by side (``slimgen bench``) for the models of issue 19, into bench/results/runtimes.md.

    .venv/bin/python bench/bench_runtimes.py [--threads 2] [--batch 64] [--rounds 5] [--repeats 20]
        [--headline /work/bench-runs/headline] [--only NAME ...]

Models (each benchmarked in its own ``bench()`` call, one process, contenders taking turns):

- ``teacher``: zoo:dcgan-fmnist (1x28x28, 7.0M MACs/image).
- ``headline-int8``: the headline recipe's pruned architecture (72% channels removed, widths from its
  prune step's folder, e.g. /work/bench-runs/headline/01-prune_channels, or ``prune(0.72, l1)`` of the
  teacher when absent), quantized with int8 weights and activations as the recipe does (calibration
  512, percentile). Speed only: the distillation between those steps changes weights, not shapes.
  Baseline: the teacher's PyTorch fp32.
- ``headline-final``: the headline recipe's final folder as the recipe wrote it (``--headline``/final:
  distilled, int8 weights and activations), when it is there. Baseline: the teacher.
- ``demo-int8``: ``make demo``'s architecture (50% channels, l1), int8 weights and activations. Baseline: teacher.
- ``tutorial64``: a generator of the PyTorch DCGAN tutorial's shape (nz=100 latents (B, 100, 1, 1),
  ngf=64: ConvTranspose2d widths 512-256-128-64 + BatchNorm + ReLU, Tanh, 3x64x64), random weights drawn
  as the tutorial's weights_init does, BatchNorm statistics from one training-mode batch. Its int8 rows are the un-pruned int8 model.
- ``tutorial64-75``: the same shape with 75% of the channels removed (widths 128-64-32-16), random
  weights, int8; baseline: ``tutorial64``'s PyTorch fp32. Speed only.

Every table states the load average; run it on the quietest machine you have.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch
from torch import nn

from slimgen.models import DCGANGenerator, ModelBundle, load_folder
from slimgen.models.inputs import InputSpec
from slimgen.prune import ChannelPruning, prune
from slimgen.quantize import ActivationQuant, quantize
from slimgen.quantize.apply import CALIBRATION_SEED
from slimgen.runtime.bench import bench, markdown

RESULTS = Path(__file__).resolve().parent / "results" / "runtimes.md"


def tutorial64(widths: list[int], seed: int = 0) -> ModelBundle:
    """A DCGAN-tutorial-shaped generator (latent (B, 100, 1, 1) -> (B, 3, 64, 64)), random weights."""
    torch.manual_seed(seed)
    kwargs = {"nz": 100, "channels": 3, "image_size": 64, "widths": widths}
    g = DCGANGenerator(**kwargs)
    for m in g.modules():  # the tutorial's weights_init: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        g.train()(torch.randn(256, 100, 1, 1))  # BatchNorm running statistics of real activations
    return ModelBundle.from_modules("gan", {"generator": g.eval()}, {"generator": kwargs},
                                    inputs=InputSpec(latent_shape=(100, 1, 1)), image_shape=(3, 64, 64))


def int8_activations(bundle: ModelBundle) -> ModelBundle:
    """int8 per-channel weights + int8 activations (calibration 512, percentile): the headline's quantize step."""
    z = bundle.inputs.draw(512, seed=CALIBRATION_SEED).z  # the latents the int8 export calibrates on
    return quantize(bundle, ActivationQuant(calibration=512, observer="percentile"), calibration=z)


def models(args: argparse.Namespace) -> dict[str, tuple[ModelBundle, ModelBundle | None, str]]:
    teacher = load_folder("zoo:dcgan-fmnist")
    head_folder = args.headline / "01-prune_channels"
    z = teacher.inputs.draw(64, seed=1234).z
    if (head_folder / "config.json").is_file():
        pruned, how = load_folder(head_folder), f"{head_folder} (the headline run's prune step), quantized here"
    else:
        pruned, how = prune(teacher, ChannelPruning(ratio=0.72, importance="l1"), example_inputs=z), "prune(0.72, l1) of the teacher"
    demo = prune(teacher, ChannelPruning(ratio=0.5, importance="l1"), example_inputs=z)
    tut = tutorial64([512, 256, 128, 64])
    final = args.headline / "final"
    finals = {"headline-final": (load_folder(final), teacher, f"{final}, the headline recipe's final folder (int8 weights + "
                                 "activations)")} if (final / "config.json").is_file() else {}
    return {
        "teacher": (teacher, None, "zoo:dcgan-fmnist, PyTorch fp32 as shipped"),
        **finals,
        "headline-int8": (int8_activations(pruned), teacher, f"headline architecture: {how}; int8 weights + activations"),
        "demo-int8": (int8_activations(demo), teacher, "demo architecture: prune(0.5, l1) of the teacher; int8 weights + activations"),
        "tutorial64": (tut, None, "DCGAN-tutorial shape (nz=100, ngf=64, 3x64x64), random weights; int8 rows = un-pruned int8"),
        "tutorial64-75": (int8_activations(tutorial64([128, 64, 32, 16])), tut,
                          "tutorial shape with 75% of channels removed (widths 128-64-32-16), random weights; int8 weights + activations"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--headline", type=Path, default=Path("/work/bench-runs/headline"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections, data = [], {}
    for name, (model, teacher, what) in models(args).items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", file=sys.stderr, flush=True)
        result = bench(model, teacher, batch=args.batch, threads=args.threads, rounds=args.rounds, repeats=args.repeats,
                       progress=lambda m: print("  " + m, file=sys.stderr, flush=True))
        sections.append(markdown(result, title=f"{name}: {what}"))
        data[name] = result.to_dict()
        print(sections[-1], flush=True)
    cmd = " ".join(["bench/bench_runtimes.py", *sys.argv[1:]])
    head = ["# Every runtime side by side", "",
            f"`.venv/bin/python {cmd}`, {dt.datetime.now(dt.UTC).isoformat(timespec='minutes')}. Each section is one "
            "`slimgen bench` measurement (slimgen.runtime.bench.bench): the baseline (teacher, PyTorch fp32) and every "
            "runtime of the model in one process, taking turns; ms per batch is the median over rounds of the median of the "
            "calls in a round. vs teacher = the baseline's ms / this ms (throughput ratio). % of peak = MACs/s over the "
            "CPU's peak for that number format (slimgen.runtime.hardware: cores x GHz x MACs/cycle from the ISA flags). "
            "PSNR: images in [-1, 1] vs the model's own PyTorch fp32 output on the same latents. The load average is "
            "that of the whole machine at the end of each section (other jobs ran beside it).", ""]
    args.out.write_text("\n".join(head) + "\n" + "\n".join(sections))
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

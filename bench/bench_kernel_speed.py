"""Does a cropped kernel run faster? The [64, 32] student of zoo:dcgan-fmnist with its 4x4 stride-2 layer cropped to
2x2 (kernel pruning) against the same student uncropped -> bench/results/kernel_speed.md.

    .venv/bin/python bench/bench_kernel_speed.py [--threads 2] [--batch 64] [--rounds 5]

Both models come from ``prune`` in this process (half the channels, first-order Taylor importance; then
``KernelPruning(size=2)``), so they differ only in that layer's kernel: 1,906,688 vs 702,464 MACs per image.
``slimgen.runtime.bench`` times the cropped model on every runtime here and the uncropped one's PyTorch fp32
as the baseline, interleaved in one process (the machine is shared: only these ratios mean anything).
Speed only: the weights are the pruned teacher's, not trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slimgen.models import load_folder
from slimgen.prune import ChannelPruning, KernelPruning, prune
from slimgen.runtime.bench import bench, markdown

ROOT = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "kernel_speed.md")
    args = ap.parse_args()
    uncropped = prune(load_folder("zoo:dcgan-fmnist"), ChannelPruning(ratio=0.5, importance="taylor"))
    cropped = prune(uncropped, KernelPruning(size=2))
    command = f"bench/bench_kernel_speed.py --threads {args.threads} --batch {args.batch} --rounds {args.rounds}"
    cropped_vs = bench(cropped, uncropped, batch=args.batch, threads=args.threads, rounds=args.rounds, compiled=False)
    own = bench(uncropped, None, batch=args.batch, threads=args.threads, rounds=args.rounds, compiled=False)
    text = "\n".join([
        "# Kernel pruning: does the cropped kernel run faster?", "",
        "Each table is one process run with its contenders taking turns (so its ratios hold); the two tables ran one "
        "after the other. The first times the cropped [64, 32] student on every runtime against the uncropped "
        "one's PyTorch fp32; the second the uncropped student on every runtime against its own PyTorch fp32, "
        "so a runtime's two rows can be compared through that shared baseline.", "",
        markdown(cropped_vs, title="[64, 32], 4x4 stride-2 layer cropped to 2x2 (model) vs uncropped (teacher)",
                 command=command),
        markdown(own, title="[64, 32] uncropped, every runtime vs its own PyTorch fp32", command=command)])
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

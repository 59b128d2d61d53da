"""Training throughput of the teacher-size DCGAN in 1 vs 2 processes; writes bench/results/distributed.md.

    .venv/bin/python bench/bench_distributed.py [--steps 20] [--batch-size 64]

Each configuration trains ``DCGANTraining`` (widths [128, 64] / [64, 128], 28x28, global batch
``--batch-size``) for 2 epochs of ``--steps`` steps on random images through ``slimgen.train``;
epoch 1 is warm-up and epoch 2's wall time (rank 0's, which waits for every step's all-reduce)
gives samples per second. 1 process runs plainly, 2 processes under ``torchrun --standalone``
(gloo over loopback). On a 2-core machine two processes can at best match one process with two
threads: the numbers show the overhead of DDP and BatchNorm sync, not a speed-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.md"
# (processes, threads per process, sync_batchnorm)
CONFIGS = [(1, 1, True), (1, 2, True), (2, 1, True), (2, 1, False)]


def worker(args: argparse.Namespace) -> None:
    """Train once (on every rank under torchrun); rank 0 writes history.json into ``args.out``."""
    import torch

    from slimgen.data import ImageSet
    from slimgen.train import DCGANTraining, train

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.rand(2048, 1, 28, 28, generator=g).mul(2).sub(1), None, "random")
    config = DCGANTraining(epochs=2, batch_size=args.batch_size, generator_widths=[128, 64],
                           discriminator_widths=[64, 128])
    train(config, out=args.out, data=data, steps_per_epoch=args.steps, device="cpu", sync_batchnorm=args.sync)


def _run(processes: int, threads: int, sync: bool, args: argparse.Namespace) -> float:
    """Samples per second of epoch 2 for one configuration."""
    out = Path(tempfile.mkdtemp(prefix="slimgen-bench-ddp-")) / "run"
    worker_args = [__file__, "--worker", "--out", str(out), "--threads", str(threads), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--sync" if sync else "--no-sync"]
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    run = subprocess.run(launcher + worker_args, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{processes} x {threads} failed (exit {run.returncode}):\n{run.stderr[-4000:]}")
    seconds = json.loads((out / "history.json").read_text())[-1]["seconds"]
    return args.batch_size * args.steps / seconds


def _machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores visible, {platform.system()} {platform.machine()}, torch {torch.__version__}"


def _busy() -> str:
    """Other processes using the CPU while the benchmark ran (ps, top 6 by CPU)."""
    ps = subprocess.run(["ps", "-eo", "pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    rows = [r[:140] for r in ps.splitlines()[1:] if "bench_distributed" not in r][:6]
    return "\n".join(["```", ps.splitlines()[0], *rows, "```"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="runs per configuration; the best is reported")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sync", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    load_before = os.getloadavg()
    busy = _busy()
    rows, base = [], 0.0
    for processes, threads, sync in CONFIGS:
        rate = max(_run(processes, threads, sync, args) for _ in range(args.repeats))
        base = base or rate
        bn = "-" if processes == 1 else "on" if sync else "off"
        rows.append(f"| {processes} | {threads} | {bn} | {args.batch_size // processes} | {rate:.1f} | {rate / base:.2f} |")
        print(rows[-1], flush=True)
    _write(args, rows, load_before, busy)


def _write(args: argparse.Namespace, rows: list[str], load_before: tuple[float, float, float], busy: str) -> None:
    text = "\n".join([
        "# Distributed training throughput (CPU, gloo)", "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- machine: {_machine()}",
        "- model: DCGAN 28x28, generator widths [128, 64], discriminator [64, 128], latent 64 (teacher size)",
        f"- settings: global batch {args.batch_size}, {args.steps} timed steps (epoch 2 of 2; epoch 1 is warm-up),"
        " random images, fp32, `slimgen.train.train` as the CLI runs it",
        f"- load average before: {' '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "- command: `.venv/bin/python bench/bench_distributed.py "
        f"--steps {args.steps} --batch-size {args.batch_size} --repeats {args.repeats}`", "",
        f"| processes | threads / process | BatchNorm sync | batch / process | samples / s (best of {args.repeats}) "
        "| vs row 1 |",
        "| --- | --- | --- | --- | --- | --- |", *rows, "",
        "Caveat: two CPU cores bound every row. Row 1 uses one core and the other rows up to two, so 2x",
        "row 1 is the ceiling. Two processes pay for DDP's gradient all-reduce and, with sync on, one",
        "BatchNorm statistics all-reduce per layer per pass, over gloo on loopback. Other jobs (listed",
        "below) were using the same cores, which skews every row by an unknown amount. The row with",
        "several threads in one process suffers most, because OpenMP threads wait for each other when",
        "another job takes their core. Scaling out pays with several GPUs or machines, not here. No GPU",
        "was available, so there are no GPU figures.", "",
        "Processes using the CPU when the benchmark started:", "", busy, "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

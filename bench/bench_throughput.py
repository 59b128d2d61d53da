"""Throughput of a compress run's exported model vs its fp32 teacher, measured in one run.

    .venv/bin/python bench/bench_throughput.py [RUN_DIR (runs/headline)] [--out bench/results/throughput.md]
        [--rounds 5] [--repeats 30]

Every contender runs on the same input (64 latents, seed 0) in the same process, at 1 and at
2 threads (the machine's two cores): the teacher in PyTorch fp32 (its own model folder), the
teacher exported to fp32 ONNX, and the run's final step (PyTorch, and its exported model.onnx
in ONNX Runtime). The contenders take turns, ``--rounds`` times, each turn the median of
``--repeats`` calls after warm-up; a cell is the median over rounds. Run it on an idle machine.

Before timing, each PyTorch model runs one batch of 1,024: freeing that batch's large buffers
raises glibc's dynamic mmap threshold, after which the batch-64 activations come from the heap
instead of fresh mmap'd pages; without it the PyTorch teacher times 13-15 ms instead of ~8 ms
at 1 thread (measured), which would flatter every speed-up against it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from slimgen.evaluate.cost import median_latency_ms
from slimgen.export import OnnxGenerator, export_onnx
from slimgen.models import load_folder, sample_latents

RESULTS = Path(__file__).resolve().parent / "results" / "throughput.md"  # and throughput.json (the same table)
EXPORTED = "final step, exported model.onnx (ONNX Runtime)"


def _contenders(run: Path, tmp: Path, z: torch.Tensor, threads: int) -> dict[str, Callable[[], object]]:
    teacher = load_folder(run / "00-teacher")
    final = load_folder(run / "final")
    onnx = run / "final" / "model.onnx"
    if not onnx.is_file():
        raise SystemExit(f"{onnx} is missing: the run has no exported ONNX model")
    teacher_onnx = export_onnx(teacher, tmp / f"teacher-{threads}.onnx")
    t_gen, f_gen = teacher.generator.eval(), final.generator.eval()
    big = sample_latents(1024, z.shape[1], seed=1)  # as torch_latency_ms does with 4x the batch
    t_gen(big), f_gen(big)  # see the module docstring: glibc's mmap threshold
    t_ort, f_ort = OnnxGenerator(teacher_onnx, threads=threads), OnnxGenerator(onnx, threads=threads)
    zn = z.numpy()
    return {
        "teacher, PyTorch fp32": lambda: t_gen(z),
        "teacher, ONNX fp32": lambda: t_ort.run_numpy(zn),
        "final step, PyTorch (its folder)": lambda: f_gen(z),
        EXPORTED: lambda: f_ort.run_numpy(zn),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, nargs="?", default=Path("runs/headline"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    teacher = load_folder(args.run / "00-teacher")
    cold_teacher = teacher.generator.eval()
    z = sample_latents(64, teacher.latent_dim or 1, seed=0)
    torch.set_num_threads(1)
    with torch.no_grad():  # before this process has run any batch larger than 64
        cold = median_latency_ms(lambda: cold_teacher(z), warmup=5, repeats=args.repeats)
    table: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fns = _contenders(args.run, Path(tmp), z, threads)
            times: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(args.rounds):
                for name, fn in fns.items():
                    times[name].append(median_latency_ms(fn, warmup=5, repeats=args.repeats))
            table[threads] = {name: statistics.median(ts) for name, ts in times.items()}
            print(threads, table[threads], flush=True)
    base = "teacher, PyTorch fp32"
    lines = [
        "# Throughput at batch 64: exported model vs fp32 teacher", "",
        f"`.venv/bin/python bench/bench_throughput.py {args.run}`, "
        f"{dt.datetime.now(dt.UTC).isoformat(timespec='minutes')}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}. Same 64 latents (seed 0) for every contender; contenders take turns, "
        f"{args.rounds} rounds x median of {args.repeats} calls after 5 warm-up calls; each cell is the median "
        "over rounds, in ms per batch of 64 (throughput vs teacher = the teacher's PyTorch fp32 time / this time, "
        "same thread count).", "",
        "| model | 1 thread (ms) | vs teacher | 2 threads (ms) | vs teacher |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in table[1]:
        cells = []
        for threads in (1, 2):
            ms = table[threads][name]
            cells += [f"{ms:.2f}", f"{table[threads][base] / ms:.1f}x"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", f"The same teacher timed first thing in the process, before any batch larger than 64 had run "
              f"(1 thread, median of {args.repeats} calls after 5 warm-up calls): {cold:.2f} ms. That is the "
              "page-fault cost the warm-up batch of 1,024 removes (module docstring)."]
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"run": str(args.run), "teacher": base, "exported": EXPORTED, "ms_b64": table, "cold_teacher_ms": cold}, indent=2) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()

"""``bench``: every runtime available for a model, timed in one process, taking turns.

Contenders: the teacher's PyTorch fp32 (the baseline), then the model on every (runtime,
precision) of :data:`COMBOS` whose runtime is installed, compiled by ``torch.compile`` (fp32,
bf16; compile time reported, never timed) where inductor and a C++ compiler are there, and OpenVINO
in throughput mode (one stream per thread, each running its share of the batch). All see the same inputs (the
generator contract's ``draw(batch, seed=0)``) and the same thread count. Each round times
every contender in turn (median of ``repeats`` calls after ``warmup``); a contender's figure
is the median of its round medians, so a burst of load hits every contender alike.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.folder import ModelBundle
from slimgen.models.inputs import GenInputs, inputs_of, run
from slimgen.runtime.engines import (
    COMBOS,
    COMPILED,
    COMPILED_COMBOS,
    STREAMS,
    STREAMS_COMBOS,
    Engine,
    available,
    build_engine,
    compile_unavailable,
    int8_activations,
)
from slimgen.runtime.hardware import CpuPeak, cpu_peak
from slimgen.runtime.measure import count_macs, median_latency_ms


@dataclass(frozen=True)
class RuntimeRow:
    """One contender: ``ms`` per batch (median of round medians), images/s, MACs/s (the fp32 model's
    MACs per image x images/s), ``vs_teacher`` (teacher PyTorch fp32 ms / ms), ``peak_fraction``
    (MACs/s over the CPU's peak for ``precision``), ``psnr`` (dB, images in [-1, 1], vs the
    model's PyTorch fp32 output on the same inputs; inf when identical)."""

    runtime: str
    precision: str
    model: str
    ms: float
    images_per_s: float
    macs_per_s: float
    vs_teacher: float
    peak_fraction: float
    psnr: float
    detail: str


@dataclass(frozen=True)
class BenchResult:
    model: str
    teacher: str
    batch: int
    threads: int
    rounds: int
    repeats: int
    macs_per_image: int
    teacher_macs_per_image: int
    cpu: str
    load: str
    runtimes: list[RuntimeRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for row in data["runtimes"]:
            row["psnr"] = "inf" if math.isinf(row["psnr"]) else row["psnr"]
        return data



def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images clamped to [-1, 1] (peak-to-peak 2); inf when identical."""
    mse = float((a.clamp(-1, 1) - b.clamp(-1, 1)).double().pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


def interleaved_ms(fns: dict[str, Callable[[], object]], *, rounds: int = 5, warmup: int = 3,
                   repeats: int = 20) -> dict[str, float]:
    """Median over ``rounds`` of each function's median call time (ms), the functions taking turns."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_latency_ms(fn, warmup=warmup, repeats=repeats))
    return {name: statistics.median(ts) for name, ts in times.items()}


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


def warm_heap(engine: nn.Module, inputs: GenInputs) -> None:
    """One call on a 4x larger batch: freeing its buffers raises glibc's mmap threshold, so timed calls
    take their activations from the heap as in a long-running process (see evaluate.cost.torch_latency_ms).
    A torch.compile engine warms it with its eager module (the same activation sizes; a new batch shape
    would compile another graph)."""
    getattr(engine, "eager", engine)(*GenInputs.cat([inputs] * 4).args())


def bench(model: ModelBundle, teacher: ModelBundle | None = None, *, batch: int = 64, threads: int = 2,
          rounds: int = 5, repeats: int = 20, warmup: int = 3, combos: tuple[tuple[str, str], ...] = COMBOS,
          compiled: bool = True, streams: bool = True, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Time ``model`` on every available runtime in ``combos`` against ``teacher``'s PyTorch fp32.

    ``teacher`` None: the model's own PyTorch fp32 is the baseline. Sets torch's thread count to
    ``threads`` for the process. Runtimes that are not installed, or fail to build the model,
    are listed in ``skipped`` with the reason. ``compiled``: also the model under ``torch.compile``
    (fp32 and bf16), compiled before timing starts (the compile time is in the row's ``detail``).
    ``streams``: also OpenVINO bf16/int8 in throughput mode (one stream per thread, the batch split
    between them), when ``threads`` >= 2.
    """
    if batch < 1 or threads < 1 or rounds < 1 or repeats < 1:
        raise ConfigError(f"batch, threads, rounds and repeats must be >= 1, got {batch}, {threads}, {rounds}, {repeats}")
    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    torch.set_num_threads(threads)
    teacher = teacher or model
    spec = inputs_of(model.generator)
    if teacher is not model and inputs_of(teacher.generator) != spec:
        raise ConfigError(f"the teacher's inputs ({inputs_of(teacher.generator).describe()}) differ from the model's "
                          f"({spec.describe()}): their speeds are not comparable on the same inputs")
    inputs = spec.draw(batch, seed=0)
    args = inputs.args()
    with torch.no_grad():
        reference = run(model.generator.eval(), inputs).float()  # in [-1, 1] from any image_range
    macs = count_macs(model.generator, inputs)
    teacher_macs = count_macs(teacher.generator, inputs)
    engines: dict[tuple[str, str], Engine] = {}
    skipped: dict[str, str] = {}
    baseline = build_engine(teacher.generator, "pytorch", "fp32")
    extra = (COMPILED_COMBOS if compiled else ()) + (STREAMS_COMBOS if streams else ())
    for runtime, precision in combos + extra:
        key = f"{runtime} {precision}"
        if runtime == COMPILED:
            missing = compile_unavailable()
        elif runtime == STREAMS:
            missing = ("one thread: one stream (the openvino rows)" if threads < 2 else
                       None if available("openvino") else "openvino is not installed")
        else:
            missing = None if available(runtime) else f"{runtime} is not installed"
        if missing is not None:
            skipped[key] = missing
            continue
        say(f"building {key}")
        try:
            engines[(runtime, precision)] = build_engine(model.generator, runtime, precision, threads=threads, meta=model.meta)
        except Exception as exc:  # a runtime that cannot take this graph is reported, not fatal
            skipped[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    quality = {}
    with torch.no_grad():
        for key, engine in engines.items():
            quality[key] = psnr(run(engine, inputs).float(), reference)
            warm_heap(engine, inputs)
        warm_heap(baseline, inputs)
        fns: dict[str, Callable[[], object]] = {"teacher": lambda: baseline(*args)}
        fns.update({f"{r} {p}": (lambda e=e: e(*args)) for (r, p), e in engines.items()})
        say(f"timing {len(fns)} contenders: {rounds} rounds x {repeats} calls")
        ms = interleaved_ms(fns, rounds=rounds, warmup=warmup, repeats=repeats)
    peak: CpuPeak = cpu_peak(threads)
    rows = []
    name = str(model.path) if model.path is not None else "model"
    teacher_name = str(teacher.path) if teacher.path is not None else "model"
    rows.append(_row("pytorch", "fp32", teacher_name + " (teacher)" if teacher is not model else teacher_name,
                     ms["teacher"], batch, teacher_macs, ms["teacher"], peak, math.inf, baseline.detail))
    for (runtime, precision), engine in engines.items():
        key = f"{runtime} {precision}"
        rows.append(_row(runtime, precision, name, ms[key], batch, macs, ms["teacher"], peak, quality[(runtime, precision)], engine.detail))
    if int8_activations(model.meta):
        skipped["note"] = ("this folder was quantized with int8 activations: only the int8 rows run that model; "
                           "its fp32/bf16 rows run its float-activation PyTorch module")
    return BenchResult(model=name, teacher=teacher_name, batch=batch, threads=threads, rounds=rounds, repeats=repeats,
                       macs_per_image=macs, teacher_macs_per_image=teacher_macs,
                       cpu=f"{peak.describe()}; {platform.machine()}, torch {torch.__version__}",
                       load=load_average(), runtimes=rows, skipped=skipped, seconds=round(time.perf_counter() - t_start, 1))


def _row(runtime: str, precision: str, model: str, ms: float, batch: int, macs: int, teacher_ms: float,
         peak: CpuPeak, quality: float, detail: str) -> RuntimeRow:
    images_per_s = batch / (ms / 1e3)
    macs_per_s = macs * images_per_s
    # ms to 4 significant digits (3 decimals left a tiny model's 0.035 ms 1% off its images/s)
    return RuntimeRow(runtime=runtime, precision=precision, model=model, ms=float(f"{ms:.4g}"),
                      images_per_s=round(images_per_s, 1),
                      macs_per_s=macs_per_s, vs_teacher=round(teacher_ms / ms, 3),
                      peak_fraction=macs_per_s / peak.peak(precision), psnr=quality, detail=detail)


def markdown(result: BenchResult, *, title: str | None = None, command: str | None = None) -> str:
    """The result as a markdown table with its settings (machine, threads, load)."""
    lines = [f"## {title or result.model}", ""]
    if command:
        lines += [f"`{command}`", ""]
    lines += [f"Batch {result.batch}, {result.threads} threads, {result.rounds} rounds x median of {result.repeats} calls, "
              f"contenders taking turns in one process; load average at the end: {result.load}. "
              f"Model {result.macs_per_image:,} MACs/image, teacher {result.teacher_macs_per_image:,}. CPU: {result.cpu}.", "",
              "| model | runtime | precision | ms / batch | images/s | GMAC/s | vs teacher fp32 | % of peak | PSNR vs fp32 (dB) | how |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result.runtimes:
        q = "identical" if math.isinf(r.psnr) else f"{r.psnr:.1f}"
        who = ("teacher" if result.teacher != result.model else "baseline (same model)") if r is result.runtimes[0] else "model"
        lines.append(f"| {who} | {r.runtime} | {r.precision} | {r.ms:.2f} | {r.images_per_s:,.0f} | {r.macs_per_s / 1e9:,.1f} | "
                     f"{r.vs_teacher:.2f}x | {100 * r.peak_fraction:.2f}% | {q} | {r.detail} |")
    for key, why in result.skipped.items():
        lines.append(f"\n- {key}: {why}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LatencyRun:
    """Latencies (ms per call) of several models measured in one interleaved run, with its settings."""

    ms: dict[str, dict[str, float]]  # model name -> {"b1": ms, "b64": ms, "onnx_b1": ms, "onnx_b64": ms (if exported)}
    threads: int
    rounds: int
    repeats: int
    load: str

    def describe(self) -> str:
        return (f"one interleaved run at the end of the run: every model and the teacher take turns, {self.rounds} rounds x "
                f"median of {self.repeats} calls after warm-up, the median over rounds; {self.threads} threads; "
                f"load average {self.load}")


def interleaved_latency(models: dict[str, nn.Module], *, onnx: dict[str, str] | None = None, threads: int | None = None,
                        rounds: int = 3, repeats: int = 10, seed: int = 0) -> LatencyRun:
    """Batch-1 and batch-64 latency of every model (an ``nn.Module`` carrying its input contract, e.g. an
    :class:`Engine`) and of its exported ONNX file in ONNX Runtime (``onnx``: name -> path), all timed in
    one interleaved run: the same inputs, the same threads, the same load for everyone."""
    from slimgen.export.onnx import OnnxGenerator

    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    fns: dict[str, Callable[[], object]] = {}
    with torch.no_grad():
        for name, module in models.items():
            module.eval()
            spec = inputs_of(module)
            for b in (1, 64):
                args = spec.draw(b, seed=seed).args()
                warm_heap(module, spec.draw(b, seed=seed))
                fns[f"{name}\tb{b}"] = lambda m=module, a=args: m(*a)
            if onnx and name in onnx:
                session = OnnxGenerator(onnx[name], threads=threads)
                for b in (1, 64):
                    args = spec.draw(b, seed=seed).args()
                    fns[f"{name}\tonnx_b{b}"] = lambda s=session, a=args: s(*a)
        ms = interleaved_ms(fns, rounds=rounds, repeats=repeats)
    table: dict[str, dict[str, float]] = {name: {} for name in models}
    for key, value in ms.items():
        name, what = key.split("\t")
        table[name][what] = round(value, 3)
    return LatencyRun(ms=table, threads=threads, rounds=rounds, repeats=repeats, load=load_average())

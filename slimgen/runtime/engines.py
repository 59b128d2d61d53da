"""Run a generator on a runtime: PyTorch (fp32, bf16 autocast; eager, or compiled by
``torch.compile``), ONNX Runtime (fp32, int8 QDQ), OpenVINO (fp32, bf16, int8 from the same QDQ graph).

An :class:`Engine` is an ``nn.Module`` called like the generator (``engine(z)`` or
``engine(z, y)``: (B, *latent_shape) [, (B,) int64] -> (B, C, H, W) float32), carrying the
generator's input contract, so ``generate`` / ``evaluate`` run it unchanged. It says what runs
(``engine.runtime``, ``engine.precision``, ``engine.describe()``).

A folder quantized with int8 activations (``meta["activation_quant"]``) is only the model it
claims to be on an int8 runtime: :func:`default_choice` picks int8 for it, and PyTorch (whose
activations are float) is refused for it unless asked for by name.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models.inputs import GenInputs, InputSpec, inputs_of, set_inputs
from slimgen.models.mode import in_mode

RUNTIMES: tuple[str, ...] = ("pytorch", "onnxruntime", "openvino")
CHOICES: tuple[str, ...] = ("auto", *RUNTIMES)  # what --runtime accepts
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
# (runtime, precision) pairs slimgen can build; the order is bench's table order
COMBOS: tuple[tuple[str, str], ...] = (
    ("pytorch", "fp32"), ("pytorch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
    ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))
_MODULES = {"pytorch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}
# torch.compile contenders (``slimgen bench``; not a --runtime choice: compiling takes seconds per batch shape)
COMPILED = "torch.compile"
COMPILED_COMBOS: tuple[tuple[str, str], ...] = ((COMPILED, "fp32"), (COMPILED, "bf16"))
# OpenVINO in throughput mode (``slimgen bench``): one stream per thread, each running its share of the batch
STREAMS = "openvino-streams"
STREAMS_COMBOS: tuple[tuple[str, str], ...] = ((STREAMS, "bf16"), (STREAMS, "int8"))
# fastest first, measured with `slimgen bench` on this project's machines (bench/results/runtimes.md)
_PREFERENCE = {"int8": ("openvino", "onnxruntime"), "bf16": ("openvino", "pytorch"),
               "fp32": ("openvino", "pytorch", "onnxruntime")}


def available(runtime: str) -> bool:
    """True when ``runtime``'s Python package imports (OpenVINO is optional; ONNX Runtime is a dependency)."""
    if runtime not in _MODULES:
        raise ConfigError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    try:
        importlib.import_module(_MODULES[runtime])
    except ImportError:
        return False
    return True


def compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot build a CPU engine here (no inductor, no C++ compiler), or None when it can."""
    import shutil

    try:
        importlib.import_module("torch._inductor")
    except ImportError as exc:
        return f"torch.compile: inductor does not import ({exc})"
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "torch.compile: no C++ compiler on PATH (inductor compiles its CPU kernels with one)"
    return None


def check_choice(runtime: str | None, precision: str | None) -> None:
    """ConfigError unless ``runtime`` (None, "auto" or one of RUNTIMES) and ``precision`` make a pair slimgen runs."""
    if runtime == "auto":
        runtime = None
    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(CHOICES)}, got {runtime!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if runtime is not None and precision is not None and (runtime, precision) not in COMBOS:
        allowed = ", ".join(p for r, p in COMBOS if r == runtime)
        raise ConfigError(f"{runtime} runs {allowed}, not {precision}")


def int8_activations(meta: dict) -> bool:
    """True for a folder quantized with int8 activations (its PyTorch module computes in float)."""
    return bool(meta.get("activation_quant"))


def default_choice(runtime: str | None, precision: str | None, *, int8_folder: bool) -> tuple[str, str]:
    """(runtime, precision) to run: the user's choice, completed with the fastest available.

    Without a choice: fp32 in PyTorch (the model as saved), or int8 on the fastest int8 runtime
    for a folder quantized with int8 activations. ``runtime="auto"`` (or a precision without a
    runtime): the fastest installed runtime for the precision. A named runtime that is missing
    raises ConfigError; an unnamed one falls back (OpenVINO -> ONNX Runtime, the portable default).
    """
    check_choice(runtime, precision)
    if precision is None:
        precision = "int8" if int8_folder else "fp32"
    if runtime is None and not int8_folder and precision == "fp32":
        return "pytorch", "fp32"  # the model exactly as saved
    if runtime == "auto":
        runtime = None
    if runtime is not None:
        if (runtime, precision) not in COMBOS:
            raise ConfigError(f"{runtime} runs {', '.join(p for r, p in COMBOS if r == runtime)}, not {precision}")
        if not available(runtime):
            raise ConfigError(f"runtime {runtime} is not installed (pip install {_MODULES[runtime]}); "
                              "omit --runtime to use the fastest one available")
        return runtime, precision  # named in full: an int8-activation folder's float module on purpose
    if int8_folder and precision != "int8":
        raise ConfigError("this folder was quantized with int8 activations: only --precision int8 runs that model "
                          "(name --runtime too to run its float-activation module on purpose)")
    for name in _PREFERENCE[precision]:
        if (name, precision) in COMBOS and available(name):
            return name, precision
    raise ConfigError(f"no installed runtime runs {precision} (install openvino or onnxruntime)")


class Engine(nn.Module):
    """A generator compiled for one runtime, called like the generator; outputs float32 (B, C, H, W).

    ``runtime``/``precision``: what runs; ``detail``: one line on how (for reports). Holds the
    temporary folder of its exported files while it lives.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], spec: InputSpec, *, runtime: str, precision: str, detail: str,
                 keep: object = None) -> None:
        super().__init__()
        self._fn, self.runtime, self.precision, self.detail, self._keep = fn, runtime, precision, detail, keep
        set_inputs(self, spec)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self._fn(z, y)

    def describe(self) -> str:
        return f"{self.runtime} {self.precision} ({self.detail})"

    def __deepcopy__(self, memo: dict) -> Engine:  # sessions cannot be copied; an engine is immutable anyway
        return self


def _feed(z: torch.Tensor, y: torch.Tensor | None) -> dict[str, np.ndarray]:
    feed = {"z": z.detach().float().contiguous().numpy()}
    if y is not None:
        feed["y"] = y.detach().long().contiguous().numpy()
    return feed


def _pytorch(generator: nn.Module, spec: InputSpec, precision: str) -> Engine:
    g = generator  # not a copy: an engine over the live module (eval mode while it runs)

    @torch.no_grad()
    def fn(z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        args = (z,) if y is None else (z, y)
        with in_mode(g):
            if precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return g(*args).float()
            return g(*args)

    detail = "eager, bf16 autocast (float32 weights, bf16 matmul/conv)" if precision == "bf16" else "eager"
    return Engine(fn, spec, runtime="pytorch", precision=precision, detail=detail)


def _compiled(generator: nn.Module, spec: InputSpec, precision: str) -> Engine:
    """``torch.compile`` (inductor, ``freezing``: weights folded as constants and prepacked for oneDNN,
    which needs an inference-only module) of the live module; bf16 as autocast inside the compiled
    region. One static graph per batch shape; the first call on a shape compiles, and its time
    (seconds) is kept on the engine's ``compile_s`` and in its ``detail``. ``engine.eager``: the
    module it compiled, uncompiled. The compiled graph holds the weights as they were at its first
    call: for inference only.
    """
    import torch._dynamo

    g = generator.eval()
    compiled = torch.compile(g, dynamic=False, options={"freezing": True})
    engine: Engine

    @torch.no_grad()
    def fn(z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        args = (z,) if y is None else (z, y)
        t0 = time.perf_counter()
        frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = compiled(*args).float()
        else:
            out = compiled(*args)
        if torch._dynamo.utils.counters["stats"]["unique_graphs"] != frames:  # this call compiled a graph
            engine.compile_s += time.perf_counter() - t0
            engine.detail = f"{base}; compiling took {engine.compile_s:.1f} s (first call per batch shape, not timed)"
        return out

    base = ("inductor, freezing" + (", bf16 autocast" if precision == "bf16" else "")
            + f", torch {torch.__version__.split('+')[0]}")
    engine = Engine(fn, spec, runtime=COMPILED, precision=precision, detail=f"{base}; not compiled yet")
    engine.compile_s = 0.0
    object.__setattr__(engine, "eager", g)  # the same module uncompiled (bench warms the heap with it), not a submodule
    return engine


def onnx_file(generator: nn.Module, spec: InputSpec, folder: Path, *, int8: bool, meta: dict | None = None,
              calibration: GenInputs | None = None, runtime: str = "onnxruntime") -> Path:
    """Export ``generator`` into ``folder`` as the fp32 or int8 QDQ ONNX graph that suits ``runtime``
    (OpenVINO: ConvTranspose2d rewritten, see ``export_generator_onnx(rewrite=True)``); returns the path."""
    from slimgen.export.onnx import export_generator_onnx

    rewrite = runtime == "openvino"
    path = folder / f"{'int8' if int8 else 'fp32'}{'-ov' if rewrite else ''}.onnx"
    if not path.is_file():
        export_generator_onnx(generator, spec, path, int8=int8, meta=meta or {}, calibration=calibration, rewrite=rewrite)
    return path


def _onnxruntime(path: Path, spec: InputSpec, precision: str, threads: int | None, keep: object) -> Engine:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def fn(z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        feed = {k: v for k, v in _feed(z, y).items() if k in names}
        return torch.from_numpy(session.run(None, feed)[0])

    return Engine(fn, spec, runtime="onnxruntime", precision=precision,
                  detail=f"ONNX Runtime {ort.__version__}, {'int8 QDQ' if precision == 'int8' else 'fp32'} graph",
                  keep=(keep, session))


def openvino_config(precision: str, threads: int | None, *, streams: int = 1) -> dict[str, str]:
    """OpenVINO CPU compile options: one stream (``streams`` > 1: throughput mode, that many streams
    sharing the ``threads``), ``threads`` threads, and the inference precision.

    fp32 runs f32 (OpenVINO's own default on AMX CPUs would be bf16). int8 graphs (QDQ) run
    their quantized layers in int8 and their float layers (the output layer) in bf16: on the
    tutorial-shaped generator that output layer took 18 ms in f32 and 6 ms in bf16 of a 70-80 ms
    batch at 1 thread (OpenVINO profile), at a PSNR cost far below int8's own; the engine says so.
    """
    hint = "f32" if precision == "fp32" else "bf16"
    mode = "LATENCY" if streams == 1 else "THROUGHPUT"
    config = {"PERFORMANCE_HINT": mode, "NUM_STREAMS": str(streams), "INFERENCE_PRECISION_HINT": hint}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


def openvino_floats(hint: object) -> str:
    """``bf16`` or ``f32``: what a compiled model's ``INFERENCE_PRECISION_HINT`` (an ``ov.Type``) says its float
    layers run in. A CPU without bf16 units takes a bf16 hint as f32. (The type prints as "<Type: 'bfloat16'>".)"""
    import openvino as ov

    return "bf16" if hint == ov.Type.bf16 else "f32"


def _openvino(path: Path, spec: InputSpec, precision: str, threads: int | None, keep: object, *,
              streams: int = 1, subpixel: bool = False) -> Engine:
    """OpenVINO engine; ``streams`` > 1: throughput mode, each call's batch split into ``streams`` equal
    parts run at once on their own streams (asynchronous requests), the outputs concatenated in order.
    ``subpixel``: the export rewrote ConvTranspose layers as Conv + DepthToSpace (said in the engine's detail)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", openvino_config(precision, threads, streams=streams))
    floats = openvino_floats(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if precision == "bf16" and floats != "bf16":
        raise ConfigError("OpenVINO runs f32, not bf16, on this CPU (it has no bf16 units: AMX-BF16 or AVX512-BF16): "
                          "use fp32 or int8")
    ports = {name: i for i, port in enumerate(compiled.inputs) for name in port.get_names()}  # a port has several names
    request = compiled.create_infer_request()
    queue = ov.AsyncInferQueue(compiled, streams)
    outputs: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, part: outputs.__setitem__(part, request.get_output_tensor(0).data.copy()))

    def fn(z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if streams == 1:
            out = request.infer({ports[k]: v for k, v in _feed(z, y).items() if k in ports})
            return torch.from_numpy(np.array(out[compiled.outputs[0]], dtype=np.float32, copy=True))
        outputs.clear()
        zs = z.tensor_split(streams)
        ys = y.tensor_split(streams) if y is not None else [None] * len(zs)
        for part, (zp, yp) in enumerate(zip(zs, ys, strict=True)):
            if len(zp):
                queue.start_async({ports[k]: v for k, v in _feed(zp, yp).items() if k in ports}, part)
        queue.wait_all()
        return torch.from_numpy(np.concatenate([outputs[i] for i in sorted(outputs)]).astype(np.float32, copy=False))

    kind = {"int8": f"int8 QDQ graph, float output layer in {floats}", "bf16": "fp32 graph, inference precision bf16",
            "fp32": "fp32 graph, inference precision f32"}[precision]
    how = "" if streams == 1 else f", throughput mode: {streams} streams, each a 1/{streams} of the batch"
    version = ov.__version__.split("-")[0]
    return Engine(fn, spec, runtime="openvino" if streams == 1 else STREAMS, precision=precision,
                  detail=f"OpenVINO {version} CPU, {'ConvTranspose as Conv + DepthToSpace, ' if subpixel else ''}{kind}{how}",
                  keep=(keep, compiled, request, queue))


def build_engine(generator: nn.Module, runtime: str, precision: str, *, threads: int | None = None,
                 meta: dict | None = None, calibration: GenInputs | None = None,
                 workdir: str | Path | None = None, onnx: str | Path | None = None) -> Engine:
    """Compile ``generator`` (carrying its input contract) for ``runtime`` at ``precision``.

    ONNX Runtime and OpenVINO run an ONNX export of the generator (int8: the same QDQ graph as
    ``slimgen export --int8``, calibrated as the folder's ``meta`` records, or on ``calibration``);
    ``onnx``: use this already exported file instead. ``workdir``: where exported files go
    (default: a temporary folder that lives as long as the engine). ``threads``: CPU threads
    (PyTorch's are process-wide: set them with ``torch.set_num_threads``).
    """
    if (runtime, precision) in COMPILED_COMBOS:
        reason = compile_unavailable()
        if reason is not None:
            raise ConfigError(reason)
        return _compiled(generator, inputs_of(generator), precision)
    streams = 1
    if (runtime, precision) in STREAMS_COMBOS:
        streams, runtime = max(2, threads or torch.get_num_threads()), "openvino"
    check_choice(runtime, precision)
    if (runtime, precision) not in COMBOS:
        raise ConfigError(f"{runtime} runs {', '.join(p for r, p in COMBOS if r == runtime)}, not {precision}")
    if not available(runtime):
        raise ConfigError(f"runtime {runtime} is not installed (pip install {_MODULES[runtime]})")
    spec = inputs_of(generator)
    if runtime == "pytorch":
        return _pytorch(generator, spec, precision)
    tmp, subpixel = None, False
    if onnx is None:
        subpixel = any(isinstance(m, nn.ConvTranspose2d) for m in generator.modules())
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="slimgen-engine-")
            workdir = tmp.name
        onnx = onnx_file(generator, spec, Path(workdir), int8=precision == "int8", meta=meta, calibration=calibration,
                         runtime=runtime)
    if runtime == "onnxruntime":
        return _onnxruntime(Path(onnx), spec, precision, threads, tmp)
    return _openvino(Path(onnx), spec, precision, threads, tmp, streams=streams, subpixel=subpixel)


def engine_for(generator: nn.Module, meta: dict, *, runtime: str | None = None, precision: str | None = None,
               threads: int | None = None) -> Engine:
    """The engine that runs a folder's model as it is meant to run (see :func:`default_choice`):
    its PyTorch module, or its int8 graph for a folder quantized with int8 activations."""
    if isinstance(generator, Engine) and runtime is None and precision is None:
        return generator  # already compiled for its runtime (e.g. an exported file)
    name, prec = default_choice(runtime, precision, int8_folder=int8_activations(meta))
    return build_engine(generator, name, prec, threads=threads if threads is not None else torch.get_num_threads(), meta=meta)


def onnx_engine(path: str | Path, spec: InputSpec, *, runtime: str = "onnxruntime", threads: int | None = None) -> Engine:
    """An engine over an already exported ONNX file (int8 when the graph holds QuantizeLinear nodes)."""
    import onnx

    from slimgen.export.onnx import warn_if_saturating

    model = onnx.load(str(path), load_external_data=False)
    int8 = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if int8:
        warn_if_saturating(path, {p.key: p.value for p in model.metadata_props},
                           "OpenVINO" if runtime == "openvino" else "ONNX Runtime", stacklevel=3)
    dummy = set_inputs(nn.Identity(), spec)
    return build_engine(dummy, runtime, "int8" if int8 else "fp32", threads=threads, onnx=path)

"""Cost of a model: parameters, non-zero parameters, MACs per image and latency.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), which counts
ConvTranspose2d correctly; thop and torch-pruning's counter overcount it by stride squared.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimgen.models.inputs import GenInputs, InputSpec, call
from slimgen.runtime.measure import count_macs, median_latency_ms

__all__ = ["count_macs", "count_nonzero_params", "count_params", "measure_cost", "median_latency_ms",
           "onnx_latency_ms", "stored_bytes", "torch_latency_ms"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (elements), zeros included."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Number of parameter elements that are not exactly zero."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


@torch.no_grad()
def torch_latency_ms(model: nn.Module, example_input: torch.Tensor | GenInputs, *, warmup: int = 3, repeats: int = 20) -> float:
    """Median latency of ``model(example_input)`` in eval mode, milliseconds per call (whole batch).

    One call on a 4x larger batch comes first: freeing its larger buffers raises glibc's dynamic
    mmap threshold, so the timed calls take their activations from the heap, as in a long-running
    process; otherwise every call pays fresh page faults (the DCGAN teacher at batch 64 times about
    twice as slow; ``bench/bench_throughput.py`` records the cold figure next to the warm ones).
    """
    model.eval()
    if isinstance(example_input, GenInputs):
        call(model, GenInputs.cat([example_input] * 4))
    else:
        model(torch.cat([example_input] * 4))
    return median_latency_ms(lambda: call(model, example_input), warmup=warmup, repeats=repeats)


def onnx_latency_ms(path: str | Path, example_input: torch.Tensor | GenInputs, *, warmup: int = 3,
                    repeats: int = 20) -> float | None:
    """Median latency of an ONNX Runtime session on ``example_input`` (ms per call), or None if it cannot run it.

    None means the file's input shape does not accept this batch size (a fixed-batch export).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    args = example_input.args() if isinstance(example_input, GenInputs) else (example_input,)
    feed = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=False)}
    try:
        session.run(None, feed)
    except Exception:  # onnxruntime raises its own Fail/InvalidArgument types for a shape mismatch
        return None
    return median_latency_ms(lambda: session.run(None, feed), warmup=warmup, repeats=repeats)


def stored_bytes(path: str | Path, *, prefix: str = "") -> int:
    """Bytes that the tensors whose names start with ``prefix`` occupy in a safetensors file, as stored.

    Packed tensors (int8, int4, codebooks, sparse indices) count at their packed size; the
    small JSON header is not counted.
    """
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return sum(e["data_offsets"][1] - e["data_offsets"][0]
               for k, e in header.items() if k != "__metadata__" and k.startswith(prefix))


@dataclass(frozen=True)
class Cost:
    """Cost of a generator: parameter counts, MACs per image, stored bytes, latency (ms per batch call)."""

    params: int
    nonzero_params: int
    macs: int
    weight_bytes: int | None
    latency_ms_b1: float | None
    latency_ms_b64: float | None
    onnx_latency_ms_b1: float | None
    onnx_latency_ms_b64: float | None
    threads: int


def measure_cost(generator: nn.Module, inputs: InputSpec | int | torch.Tensor, *, folder: str | Path | None = None,
                 latency: bool = True, part: str = "generator") -> Cost:
    """Cost of ``generator`` (inputs of its contract -> images); bytes and ONNX timing from ``folder`` if given.

    ``inputs``: the input contract (a plain int: the classic (B, latent_dim) latent), or for another
    part of a model folder (``part``, e.g. its discriminator) one example batch (B, C, H, W) it takes:
    then no latency is measured. Stored bytes: the tensors of ``part`` in ``folder``'s model.safetensors.
    """
    if isinstance(inputs, torch.Tensor):
        z1 = z64 = inputs
        latency = False
    else:
        spec = InputSpec.latent(inputs) if isinstance(inputs, int) else inputs
        z1, z64 = spec.draw(1, seed=0), spec.draw(64, seed=0)
    onnx = Path(folder) / "model.onnx" if folder is not None else None
    has_onnx = latency and onnx is not None and onnx.is_file()
    return Cost(
        params=count_params(generator),
        nonzero_params=count_nonzero_params(generator),
        macs=count_macs(generator, z1),
        weight_bytes=stored_bytes(Path(folder) / "model.safetensors", prefix=f"{part}.") if folder else None,
        latency_ms_b1=torch_latency_ms(generator, z1) if latency else None,
        latency_ms_b64=torch_latency_ms(generator, z64) if latency else None,
        onnx_latency_ms_b1=onnx_latency_ms(onnx, z1) if has_onnx else None,  # type: ignore[arg-type]
        onnx_latency_ms_b64=onnx_latency_ms(onnx, z64) if has_onnx else None,  # type: ignore[arg-type]
        threads=torch.get_num_threads(),
    )

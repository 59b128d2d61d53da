"""Runtimes: run a generator in PyTorch, ONNX Runtime or OpenVINO at fp32, bf16 or int8, and
measure them side by side against the CPU's peak (``slimgen bench``)."""

from slimgen.runtime.engines import (
    CHOICES,
    COMBOS,
    PRECISIONS,
    RUNTIMES,
    Engine,
    available,
    build_engine,
    default_choice,
    engine_for,
    int8_activations,
)

__all__ = ["CHOICES", "COMBOS", "PRECISIONS", "RUNTIMES", "Engine", "available", "build_engine", "default_choice", "engine_for",
           "int8_activations"]

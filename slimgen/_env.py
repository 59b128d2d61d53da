"""Process-wide environment: caches of third-party libraries go into slimgen's own folder; what the CPU has
(its feature flags), read once, for the choices that depend on it (bf16 training, 7-bit int8 weights)."""

from __future__ import annotations

import os
import platform
import re
from functools import lru_cache
from pathlib import Path


def cache_dir() -> Path:
    """slimgen's cache folder (``$SLIMGEN_CACHE`` or ``~/.cache/slimgen``)."""
    return Path(os.environ.get("SLIMGEN_CACHE", Path.home() / ".cache" / "slimgen"))


def configure_caches() -> None:
    """Point matplotlib, torch hub and inductor caches at slimgen's cache unless the user set them."""
    root = cache_dir()
    for var, sub in (
        ("MPLCONFIGDIR", "matplotlib"),
        ("TORCH_HOME", "torch"),
        ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
    ):
        os.environ.setdefault(var, str(root / sub))
    os.environ.setdefault("MPLBACKEND", "Agg")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux); empty where the file is missing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            m = re.search(r"^flags\s*:\s*(.*)$", f.read(), re.M)
    except OSError:
        return frozenset()
    return frozenset(m.group(1).split()) if m else frozenset()


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 arithmetic units (AMX-BF16 or AVX512-BF16); elsewhere bf16 is emulated."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def int8_saturates() -> bool:
    """Whether this is an x86 CPU without an int8 dot-product instruction (VNNI, AVX-VNNI, AMX-INT8): there
    ONNX Runtime's u8s8 kernels add pairs of uint8 x int8 products in 16 bits (``vpmaddubsw``), which
    saturate on full-range int8 weights, so int8 weights are kept to 7 bits (``reduce_range``)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags()

"""The CPU's peak multiply-accumulate rate per number format, from its instruction set.

Derived from ``/proc/cpuinfo`` (flags, ``cpu MHz``) and ``lscpu`` (``CPU max MHz`` where the
kernel reports it; virtual machines often report only the nominal ``cpu MHz``). Per core and
cycle, with two 512-bit FMA ports (Xeon Scalable; one-port parts reach half):

- fp32: AVX-512 FMA 2 x 16 = 32 MACs (AVX2 FMA: 2 x 8 = 16).
- bf16: AMX-BF16 TDPBF16PS, 16x16x32 MACs per 16 cycles = 512 (Intel: 1,024 ops); else AVX-512
  BF16 VDPBF16PS 2 x 32 = 64; else the fp32 rate (bf16 is computed in fp32).
- int8: AMX-INT8 TDPBUSD, 16x16x64 per 16 cycles = 1,024 (Intel: 2,048 ops); else AVX-512 VNNI
  VPDPBUSD 2 x 64 = 128; else AVX-VNNI (256-bit) 2 x 32 = 64; else AVX2 (two-instruction
  VPMADDUBSW + VPMADDWD) 32.

Peak = cores used x frequency x MACs per cycle. A fraction of it says how far a runtime is
from what the silicon could do; the memory system and small layers keep real models well below.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache

from slimgen._env import cpu_flags


@dataclass(frozen=True)
class CpuPeak:
    """Peak MACs/s per number format for ``cores`` cores at ``ghz``, and how each was derived."""

    model: str
    cores: int
    ghz: float
    macs_per_cycle: dict[str, int]  # per core, by precision ("fp32", "bf16", "int8")
    isa: dict[str, str]  # the instruction set each rate assumes, by precision
    source: str  # where the frequency and flags came from

    def peak(self, precision: str) -> float:
        """Peak MACs per second at ``precision`` on ``cores`` cores."""
        return self.cores * self.ghz * 1e9 * self.macs_per_cycle[precision]

    def describe(self) -> str:
        rates = "; ".join(f"{p}: {self.isa[p]} {self.macs_per_cycle[p]:,} MACs/cycle/core = "
                          f"{self.peak(p) / 1e12:.2f} TMAC/s" for p in ("fp32", "bf16", "int8"))
        return f"{self.model}, {self.cores} cores x {self.ghz:.2f} GHz ({self.source}); {rates}"


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _lscpu_max_mhz() -> float | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"CPU max MHz:\s*([\d.]+)", out)
    return float(m.group(1)) if m else None


def rates_from_flags(flags: set[str]) -> tuple[dict[str, int], dict[str, str]]:
    """(MACs per cycle per core, instruction set) by precision, from /proc/cpuinfo flags."""
    if "avx512f" in flags:
        fp32 = (32, "AVX-512 FMA x2")
    elif "fma" in flags and "avx2" in flags:
        fp32 = (16, "AVX2 FMA x2")
    else:
        fp32 = (8, "SSE x2")
    if "amx_bf16" in flags:
        bf16 = (512, "AMX-BF16")
    elif "avx512_bf16" in flags:
        bf16 = (64, "AVX-512 BF16 x2")
    else:
        bf16 = (fp32[0], f"{fp32[1]} (no bf16 unit)")
    if "amx_int8" in flags:
        int8 = (1024, "AMX-INT8")
    elif "avx512_vnni" in flags:
        int8 = (128, "AVX-512 VNNI x2")
    elif "avx_vnni" in flags or "avx2" in flags:
        int8 = (64, "AVX-VNNI x2") if "avx_vnni" in flags else (32, "AVX2 x2")
    else:
        int8 = (fp32[0], f"{fp32[1]} (no int8 dot product)")
    return ({"fp32": fp32[0], "bf16": bf16[0], "int8": int8[0]}, {"fp32": fp32[1], "bf16": bf16[1], "int8": int8[1]})


@lru_cache(maxsize=8)
def cpu_peak(cores: int | None = None) -> CpuPeak:
    """This machine's :class:`CpuPeak` for ``cores`` cores (default: all CPUs the process may use)."""
    info = _cpuinfo()
    flags = set(cpu_flags())
    model_m = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    mhz_m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)
    max_mhz = _lscpu_max_mhz()
    if max_mhz:
        mhz, source = max_mhz, "lscpu CPU max MHz; flags from /proc/cpuinfo"
    elif mhz_m:
        mhz, source = float(mhz_m.group(1)), "/proc/cpuinfo cpu MHz (no max MHz reported); flags from /proc/cpuinfo"
    else:
        mhz, source = 2000.0, "frequency unknown, 2.0 GHz assumed"
    rates, isa = rates_from_flags(flags)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuPeak(model=model_m.group(1).strip() if model_m else "unknown CPU",
                   cores=min(cores or available, available), ghz=mhz / 1e3, macs_per_cycle=rates, isa=isa, source=source)

"""Process-wide environment: caches of third-party libraries go into slimgen's own folder."""

from __future__ import annotations

import os
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

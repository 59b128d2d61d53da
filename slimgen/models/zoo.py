"""Shipped models (``zoo:NAME``): folders inside the package, trained by ``slimgen train``."""

from __future__ import annotations

from pathlib import Path

from slimgen.errors import ModelFolderError

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"
DESCRIPTIONS = {
    "dcgan-fmnist": "DCGAN generator + discriminator, Fashion-MNIST 1x28x28 (teacher)",
    "cdcgan-fmnist": "class-conditional DCGAN G(z, y) + projection discriminator, Fashion-MNIST 1x28x28",
    "vae-fmnist": "convolutional VAE (encoder + decoder), Fashion-MNIST 1x28x28 (teacher)",
    "fmnist-classifier": "Fashion-MNIST CNN classifier; the TRAINING feature space (perceptual term, selection)",
    "fmnist-eval": "independent Fashion-MNIST classifier (another design); the REPORTING feature space",
}


def zoo_names() -> list[str]:
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file()) if ZOO_DIR.is_dir() else []


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` lies inside the package's zoo (which slimgen never writes into)."""
    return Path(path).resolve().is_relative_to(ZOO_DIR)


def zoo_path(name: str) -> Path:
    path = ZOO_DIR / name
    if not (path / "config.json").is_file():
        known = ", ".join(zoo_names()) or "none shipped"
        raise ModelFolderError(f"zoo:{name}: no such shipped model (known: {known})")
    return path


def resolve_model_path(spec: str | Path) -> Path:
    """``zoo:NAME`` or a model folder path -> the folder (must exist and hold config.json)."""
    s = str(spec)
    if s.startswith("zoo:"):
        return zoo_path(s[4:])
    path = Path(s)
    if not path.exists():
        raise ModelFolderError(f"{path}: no such model folder")
    if not path.is_dir():
        raise ModelFolderError(f"{path}: a model is a folder with config.json and model.safetensors, not a file")
    if not (path / "config.json").is_file():
        raise ModelFolderError(f"{path}: not a model folder (no config.json)")
    return path

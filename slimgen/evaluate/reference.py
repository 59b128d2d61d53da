"""Reference statistics: features of the real image set, computed once and cached on disk.

The cache file lives under ``slimgen._env.cache_dir() / "reference"`` and is keyed by data
set, split, extractor name and the hash of the extractor's weights, so retraining the
extractor or changing the data set never reuses stale features.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from slimgen._env import cache_dir
from slimgen.evaluate.features import FeatureExtractor, Features, extract
from slimgen.evaluate.quality import kth_neighbour_radius
from slimgen.io import write_atomic

CACHE_VERSION = 3  # 3: features extracted channels-last (features.extract_batches), as the generated ones are
PR_K = 3  # k of the k-NN manifolds for precision/recall


@dataclass(frozen=True)
class Reference:
    """Real-set features and what they were computed from."""

    name: str  # "fashion-mnist/test"
    image_shape: tuple[int, int, int]  # (C, H, W) of the real images
    features: Features
    radii: torch.Tensor  # (N,) distance to the 3rd nearest other real sample (precision/recall)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[-60:]


def cache_path(dataset: str, split: str, extractor: FeatureExtractor) -> Path:
    """Cache file for (data set, split, extractor name, extractor weights hash)."""
    key = f"v{CACHE_VERSION}|{dataset}|{split}|{extractor.name}|{extractor.weights_hash}"
    if Path(dataset).exists():  # a path: the file's identity includes its size and time
        st = Path(dataset).stat()
        key += f"|{Path(dataset).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "reference" / f"{_slug(dataset)}-{split}-{_slug(extractor.name)}-{digest}.safetensors"


def _save(path: Path, ref: Reference) -> None:
    tensors = {"features": ref.features.features.contiguous(), "radii": ref.radii.contiguous()}
    if ref.features.logits is not None:
        tensors["logits"] = ref.features.logits.contiguous()
    meta = {"name": ref.name, "image_shape": ",".join(map(str, ref.image_shape))}
    write_atomic(path, lambda p: save_file(tensors, str(p), metadata=meta))


def _load(path: Path) -> Reference | None:
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        shape = tuple(int(s) for s in meta["image_shape"].split(","))
        feats = Features(tensors["features"], tensors.get("logits"))
        return Reference(meta["name"], shape, feats, tensors["radii"])  # type: ignore[arg-type]
    except (SafetensorError, OSError, KeyError, ValueError):
        return None  # unreadable cache: recompute


def reference_features(extractor: FeatureExtractor, dataset: str = "fashion-mnist", split: str = "test", *,
                       progress: bool = False, use_cache: bool = True) -> Reference:
    """Features of every image of ``dataset``/``split`` (default: the 10,000 Fashion-MNIST test images)."""
    path = cache_path(dataset, split, extractor)
    if use_cache and path.is_file() and (cached := _load(path)) is not None:
        return cached
    from slimgen.data import load_dataset

    data = load_dataset(dataset, split)
    extractor.check_input(data.image_shape, f"reference data {data.name}")
    feats = extract(extractor, data.images, progress=progress, desc=f"reference {data.name}")
    ref = Reference(f"{dataset}/{split}", data.image_shape, feats, kth_neighbour_radius(feats.features, PR_K))
    if use_cache:
        _save(path, ref)
    return ref


@lru_cache(maxsize=4)
def cached_reference(extractor: FeatureExtractor, dataset: str, split: str) -> Reference:
    """In-process memo of :func:`reference_features` (for repeated calls during fine-tuning)."""
    with torch.no_grad():
        return reference_features(extractor, dataset, split)


def load_resized_folder(folder: str | Path, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Every PNG/JPEG image under ``folder`` (sorted), any size, as (N, C, H, W) in [-1, 1] for ``image_shape``.

    Resized as clean-fid does it (Parmar et al. 2022, "On Aliased Resizing and Surprising
    Subtleties in GAN Evaluation"): each image is converted to gray ("L") or RGB, then resized
    to (W, H) by PIL's bicubic filter on the uint8 image, which low-pass filters before
    subsampling (torch's bilinear interpolation without antialiasing aliases when shrinking);
    an image already of the target size is left untouched.
    """
    from slimgen.data.dataset import load_image_folder
    from slimgen.errors import DataError

    c, h, w = image_shape
    if c not in (1, 3):
        raise DataError(f"a reference folder can stand for 1- or 3-channel images, the model makes {c} channels")
    return load_image_folder(folder, size=(h, w), channels=c, resample="bicubic").images


def folder_reference(extractor: FeatureExtractor, folder: str | Path, image_shape: tuple[int, int, int], *,
                     progress: bool = False) -> Reference:
    """Features of a user's folder of images of any size, resized to ``image_shape`` (C, H, W) (not cached)."""
    images = load_resized_folder(folder, image_shape)
    if len(images) < PR_K + 1:
        from slimgen.errors import DataError

        raise DataError(f"{folder}: {len(images)} images; a reference needs at least {PR_K + 1}")
    extractor.check_input(tuple(images.shape[1:]), f"reference folder {folder}")
    feats = extract(extractor, images, progress=progress, desc=f"reference {Path(folder).name}")
    name = f"{folder} ({len(images)} images resized to {image_shape[1]}x{image_shape[2]}, PIL bicubic)"
    return Reference(name, tuple(images.shape[1:]), feats, kth_neighbour_radius(feats.features, PR_K))  # type: ignore[arg-type]

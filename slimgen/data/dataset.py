"""Loading every supported source into one :class:`ImageSet`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slimgen.data.idx import read_idx
from slimgen.errors import DataError

FASHION_MNIST_DIR = Path(os.environ.get("SLIMGEN_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FMNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass(frozen=True)
class ImageSet:
    """Images (N, C, H, W) as float32 in [-1, 1] and optional integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"{self.name}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise DataError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, n: int, *, seed: int = 0) -> ImageSet:
        """A random subset of ``n`` images (all of them if ``n >= len(self)``)."""
        if n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        labels = None if self.labels is None else self.labels[idx]
        return ImageSet(self.images[idx], labels, f"{self.name}[{n}]")


def uint8_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) in [0, 255] -> float32 in [-1, 1]."""
    return torch.from_numpy(np.array(images, dtype=np.float32)).div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] -> uint8 in [0, 255], same shape."""
    return images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


def load_idx_pair(images_path: str | Path, labels_path: str | Path | None, *, name: str | None = None) -> ImageSet:
    """Load an MNIST-format IDX images file (N, H, W) and optional labels file (N,)."""
    images = read_idx(images_path)
    if images.ndim == 3:
        images = images[:, None]  # (N, 1, H, W)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images of 3 or 4 dimensions, got {images.dtype} {images.shape}")
    labels = None
    if labels_path is not None:
        lab = read_idx(labels_path)
        if lab.ndim != 1:
            raise DataError(f"{labels_path}: labels must be one-dimensional, got shape {lab.shape}")
        if len(lab) != len(images):
            raise DataError(
                f"{images_path} holds {len(images)} images but {labels_path} holds {len(lab)} labels"
            )
        labels = torch.from_numpy(lab.astype(np.int64))
    return ImageSet(uint8_to_unit(images), labels, name or Path(images_path).name)


def load_fashion_mnist(split: str = "train", *, root: str | Path | None = None) -> ImageSet:
    """Fashion-MNIST (60,000 train / 10,000 test, 1x28x28) from the Debian package's IDX files."""
    if split not in _FMNIST_FILES:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; choose 'train' or 'test'")
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    img, lab = (folder / f for f in _FMNIST_FILES[split])
    if not img.is_file():
        raise DataError(
            f"{img}: file not found. Install Fashion-MNIST with `apt-get install dataset-fashion-mnist` "
            "(make setup does it) or set SLIMGEN_FASHION_MNIST to a folder with the IDX files"
        )
    return load_idx_pair(img, lab, name=f"fashion-mnist/{split}")


def load_digits(split: str = "train", *, size: int = 28) -> ImageSet:
    """scikit-learn's bundled 8x8 digits (1,797 images), upscaled to ``size`` and split 80/20."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    x = torch.from_numpy(bunch.images).float().div(16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    cut = int(0.8 * len(x))
    sl = slice(0, cut) if split == "train" else slice(cut, None)
    return ImageSet(x[sl].clamp(0, 1).mul(2).sub(1), y[sl], f"digits/{split}")


def load_image_folder(folder: str | Path, *, size: int | tuple[int, int] | None = None, channels: int = 1,
                      resample: str = "bilinear") -> ImageSet:
    """All PNG/JPEG images under ``folder`` (sorted), converted to ``channels`` and resized to ``size``
    (an int for square images, or (H, W)) by PIL's ``resample`` filter (``bilinear`` or ``bicubic``)
    on the uint8 image; an image already of that size is left as it is.

    Sub-folder names become integer labels when images sit in sub-folders.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images found (looked for {', '.join(sorted(_IMAGE_SUFFIXES))})")
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DataError(f"channels must be 1 or 3, got {channels}")
    filt = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[resample]
    h, w = (size, size) if isinstance(size, int) else (size or (0, 0))
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if size is not None and im.size != (w, h):
                    im = im.resize((w, h), filt)
                arrays.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{f}: unreadable image ({exc})") from exc
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"{folder}: images have different sizes {sorted(shapes)}; pass a size to resize them")
    stack = np.stack(arrays)
    stack = stack[:, None] if channels == 1 else stack.transpose(0, 3, 1, 2)  # (N, C, H, W)
    classes = sorted({f.parent.relative_to(folder).as_posix() for f in files})
    labels = None
    if len(classes) > 1:
        lookup = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([lookup[f.parent.relative_to(folder).as_posix()] for f in files])
    return ImageSet(uint8_to_unit(stack), labels, folder.name)


def load_array(path: str | Path) -> ImageSet:
    """A ``.npy`` array or ``.npz`` archive (keys ``images``/``x`` and optional ``labels``/``y``).

    uint8 arrays are read as [0, 255]; float arrays must already be in [-1, 1] or [0, 1].
    Shapes (N, H, W), (N, C, H, W) and (N, H, W, C) with C in {1, 3} are accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy/.npz file ({exc})") from exc
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        keys = set(loaded.files)
        key = next((k for k in ("images", "x", "arr_0") if k in keys), None)
        if key is None:
            raise DataError(f"{path}: no 'images' (or 'x') array; found {sorted(keys)}")
        arr = loaded[key]
        lab_key = next((k for k in ("labels", "y") if k in keys), None)
        if lab_key is not None:
            labels = torch.from_numpy(loaded[lab_key].astype(np.int64))
    else:
        arr = loaded
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise DataError(f"{path}: expected images of shape (N, H, W) or (N, C, H, W), got {arr.shape}")
    if arr.shape[1] not in (1, 3) and arr.shape[3] in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    if arr.dtype == np.uint8:
        images = uint8_to_unit(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        images = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        lo, hi = float(images.min()), float(images.max())
        if lo >= 0.0 and hi <= 1.0:
            images = images * 2 - 1
        elif lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
            raise DataError(f"{path}: float images must lie in [0, 1] or [-1, 1], found [{lo:.3g}, {hi:.3g}]")
    else:
        raise DataError(f"{path}: unsupported dtype {arr.dtype}; use uint8 or float")
    return ImageSet(images, labels, path.name)


def load_dataset(spec: str, split: str = "train", *, size: int | None = None, channels: int = 1) -> ImageSet:
    """Load a data set by name or path.

    ``spec`` is ``fashion-mnist``, ``digits``, an IDX images file (its labels file is found
    by replacing ``images`` with ``labels`` in the name, if present), an image folder, or a
    ``.npy``/``.npz`` file.
    """
    if spec in ("fashion-mnist", "fmnist"):
        return load_fashion_mnist(split)
    if spec == "digits":
        return load_digits(split, size=size or 28)
    path = Path(spec)
    if path.is_dir():
        return load_image_folder(path, size=size, channels=channels)
    if path.suffix in (".npy", ".npz"):
        return load_array(path)
    if "idx" in path.name or path.suffix == ".gz":
        label_name = path.name.replace("images", "labels").replace("idx3", "idx1")
        label_path = path.with_name(label_name)
        return load_idx_pair(path, label_path if label_name != path.name and label_path.exists() else None)
    if not path.exists():
        raise DataError(f"{spec}: no such data set or path (known names: fashion-mnist, digits)")
    raise DataError(f"{spec}: unsupported data file; use an IDX file, an image folder or .npy/.npz")

"""Sampling images from a model folder into a PNG grid or a uint8 .npy array."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from slimgen.data.dataset import to_uint8
from slimgen.errors import SlimgenError
from slimgen.io import write_atomic
from slimgen.models import ModelBundle, generate, load_folder


def sample_uint8(bundle: ModelBundle, n: int, *, seed: int = 0, batch_size: int = 500,
                 classes: int | None = None, generator: nn.Module | None = None) -> np.ndarray:
    """(n, C, H, W) uint8 images from inputs drawn with ``seed`` through the model's input contract.

    ``classes``: the label of every sample for a class-conditional model (default: drawn uniformly).
    ``generator``: what runs them (e.g. a :class:`slimgen.runtime.Engine`; default the bundle's generator).
    """
    if bundle.inputs is None:
        raise SlimgenError(f"{bundle.path}: a {bundle.kind} model has no latent space to sample")
    inputs = bundle.inputs.draw(n, seed=seed, classes=classes)
    chunks = [to_uint8(x).numpy() for x in tqdm(generate(generator or bundle.generator, inputs, batch_size=batch_size),
                                                  total=math.ceil(n / batch_size), desc="sampling", leave=False)]
    return np.concatenate(chunks)


def image_grid(images: np.ndarray, *, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 grid image (H', W') or (H', W', 3)."""
    n, c, h, w = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = images[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_png(array: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    write_atomic(path, lambda p: Image.fromarray(array).save(p, format="PNG"))


def sample_to_file(model: str | Path, out: str | Path, *, n: int = 64, seed: int = 0, classes: int | None = None,
                   runtime: str | None = None, precision: str | None = None) -> str:
    """Sample ``n`` images of ``model`` (folder or zoo:NAME): ``.png`` writes a grid, ``.npy`` the array.

    ``classes``: one label for every image of a class-conditional model. ``runtime``/``precision`` as in
    :func:`slimgen.runtime.default_choice` (an int8-activation folder runs its int8 graph by default).
    Returns what ran (``Engine.describe()``)."""
    from slimgen.runtime import engine_for

    out = Path(out)
    if out.suffix not in (".png", ".npy"):
        raise SlimgenError(f"{out}: output must end in .png (grid) or .npy (uint8 array)")
    bundle = load_folder(model)
    engine = engine_for(bundle.generator, bundle.meta, runtime=runtime, precision=precision)
    images = sample_uint8(bundle, n, seed=seed, classes=classes, generator=engine)
    if out.suffix == ".png":
        save_png(image_grid(images), out)
    else:
        write_atomic(out, lambda p: np.save(p.open("wb"), images))
    return engine.describe()

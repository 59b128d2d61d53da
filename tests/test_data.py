"""Data loaders on real Fashion-MNIST and every bad-input case."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slimgen.data import load_dataset, read_idx
from slimgen.data.dataset import load_array, load_fashion_mnist, load_idx_pair, load_image_folder, to_uint8
from slimgen.errors import DataError
from tests.conftest import needs_fmnist


def _write_idx(path: Path, array: np.ndarray, *, gz: bool = True) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@needs_fmnist
def test_fashion_mnist_test_split_is_real() -> None:
    data = load_fashion_mnist("test")
    assert data.images.shape == (10_000, 1, 28, 28)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) == -1.0 and float(data.images.max()) == 1.0
    assert data.labels is not None and sorted(data.labels.unique().tolist()) == list(range(10))
    assert torch.bincount(data.labels).tolist() == [1000] * 10  # the test split is balanced


def test_digits_are_bundled_and_resized() -> None:
    data = load_dataset("digits", "train")
    assert data.images.shape[1:] == (1, 28, 28)
    assert -1.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    assert len(data) == int(0.8 * 1797)


def test_idx_pair_round_trip(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (5, 6, 7)).astype(np.uint8)
    data = load_idx_pair(_write_idx(tmp_path / "x-images-idx3-ubyte.gz", imgs),
                         _write_idx(tmp_path / "x-labels-idx1-ubyte.gz", np.arange(5)))
    assert data.images.shape == (5, 1, 6, 7)
    assert np.array_equal(to_uint8(data.images)[:, 0].numpy(), imgs)
    assert data.labels.tolist() == [0, 1, 2, 3, 4]
    # load_dataset finds the labels file next to the images file
    assert load_dataset(str(tmp_path / "x-images-idx3-ubyte.gz")).labels is not None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")


def test_truncated_gz(tmp_path: Path) -> None:
    p = _write_idx(tmp_path / "t.gz", np.zeros((50, 28, 28)))
    p.write_bytes(p.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"t\.gz: corrupt or truncated gzip"):
        read_idx(p)


def test_truncated_payload(tmp_path: Path) -> None:
    p = _write_idx(tmp_path / "t.idx", np.zeros((4, 3, 3)), gz=False)
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DataError, match="announces shape"):
        read_idx(p)


def test_wrong_magic(tmp_path: Path) -> None:
    p = tmp_path / "bad.idx"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="wrong IDX magic number 12340801"):
        read_idx(p)


def test_label_count_mismatch(tmp_path: Path) -> None:
    imgs = _write_idx(tmp_path / "a.gz", np.zeros((5, 4, 4)))
    labs = _write_idx(tmp_path / "b.gz", np.zeros(4))
    with pytest.raises(DataError, match=r"holds 5 images but .* holds 4 labels"):
        load_idx_pair(imgs, labs)


def test_image_folder(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_image_folder(tmp_path, size=16)
    assert data.images.shape == (6, 1, 16, 16)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    rgb = load_image_folder(tmp_path, size=8, channels=3)
    assert rgb.images.shape == (6, 3, 8, 8)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images found"):
        load_image_folder(tmp_path)


def test_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"broken\.png: unreadable image"):
        load_image_folder(tmp_path)


def test_npy_and_npz(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)  # channels-last
    np.save(tmp_path / "a.npy", arr)
    data = load_array(tmp_path / "a.npy")
    assert data.images.shape == (3, 1, 28, 28)
    np.savez(tmp_path / "b.npz", images=np.zeros((2, 1, 8, 8), np.float32), labels=np.array([1, 0]))
    data = load_dataset(str(tmp_path / "b.npz"))
    assert data.labels.tolist() == [1, 0] and float(data.images.min()) == -1.0  # [0, 1] floats mapped to [-1, 1]


def test_npy_bad_range_and_corrupt(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.full((2, 4, 4), 7.0, np.float32))
    with pytest.raises(DataError, match="must lie in"):
        load_array(tmp_path / "f.npy")
    (tmp_path / "c.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"c\.npy: not a readable"):
        load_array(tmp_path / "c.npy")


def test_unknown_dataset_name() -> None:
    with pytest.raises(DataError, match="no such data set"):
        load_dataset("imagenet-42")

"""Do the teacher's samples look like Fashion-MNIST? Judged by a classifier slimgen did not make.

Trains scikit-learn's logistic regression on raw Fashion-MNIST pixels (independent of slimgen's
CNN and its metrics), reports its test accuracy, then classifies the samples written by
``slimgen sample zoo:dcgan-fmnist -n 10000 --seed 0 --out s.npy`` and reports the class histogram
and the classifier's mean confidence on samples vs on real test images.

    .venv/bin/python bench/check_samples.py [--samples s.npy] [--model zoo:dcgan-fmnist]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from slimgen.data.dataset import FASHION_MNIST_CLASSES, load_fashion_mnist, to_uint8

RESULTS = Path(__file__).parent / "results"


def _pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:dcgan-fmnist")
    ap.add_argument("--samples", type=Path, default=None)
    ap.add_argument("--train-n", type=int, default=20000)
    args = ap.parse_args()
    samples_path = args.samples
    if samples_path is None:
        samples_path = Path(tempfile.mkdtemp()) / "s.npy"
        cmd = [str(Path(sys.executable).parent / "slimgen"), "sample", args.model, "-n", "10000", "--seed", "0",
               "--out", str(samples_path)]
        subprocess.run(cmd, check=True)
    samples = np.load(samples_path)
    assert samples.dtype == np.uint8 and samples.shape == (10000, 1, 28, 28), (samples.dtype, samples.shape)

    train, test = load_fashion_mnist("train").subset(args.train_n, seed=0), load_fashion_mnist("test")
    t0 = time.perf_counter()
    clf = LogisticRegression(max_iter=300, C=0.5)
    clf.fit(_pixels(to_uint8(train.images).numpy()), train.labels.numpy())
    fit_s = time.perf_counter() - t0
    test_x = _pixels(to_uint8(test.images).numpy())
    acc = float((clf.predict(test_x) == test.labels.numpy()).mean())
    proba_real = clf.predict_proba(test_x).max(1).mean()
    proba = clf.predict_proba(_pixels(samples))
    hist = np.bincount(proba.argmax(1), minlength=10)

    lines = [
        "# Samples of zoo:dcgan-fmnist judged by an independent classifier", "",
        f"Command: `.venv/bin/python bench/check_samples.py --model {args.model}` "
        f"(samples: `slimgen sample {args.model} -n 10000 --seed 0 --out s.npy`).",
        f"Judge: scikit-learn LogisticRegression(C=0.5) on raw pixels, trained on {len(train)} Fashion-MNIST "
        f"training images in {fit_s:.0f} s; test accuracy {acc:.4f} on the 10,000 test images.",
        f"Machine: {platform.machine()}, Python {platform.python_version()}.", "",
        f"Samples: uint8 {samples.shape}; classes present: {int((hist > 0).sum())} of 10; "
        f"mean max-probability {proba.max(1).mean():.3f} on samples vs {proba_real:.3f} on real test images.", "",
        "| class | samples | share |", "| --- | ---: | ---: |",
        *[f"| {name} | {h} | {h / len(samples):.1%} |" for name, h in zip(FASHION_MNIST_CLASSES, hist, strict=True)],
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "samples_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

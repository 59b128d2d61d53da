"""Train/eval mode for a block of code, restored afterwards: the one place the was-training idiom lives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def in_mode(module: nn.Module, training: bool = False) -> Iterator[nn.Module]:
    """``module`` in eval mode (or train mode with ``training=True``) inside the block; afterwards, even on
    an exception, every submodule is back in the mode ``module`` was in. Yields ``module``."""
    was_training = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was_training)

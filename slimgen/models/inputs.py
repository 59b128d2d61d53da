"""The generator contract: how to draw a generative model's inputs and how to call it.

Every verb (sample, evaluate, prune, quantize, distill, fine-tune, QAT, export, report) sees a
generator only through this contract, so no code path assumes a (B, latent_dim) latent:

- ``InputSpec`` says what one sample's inputs are: a latent of any shape (``(100,)``,
  ``(100, 1, 1)``, ``(4, 8, 8)``), its distribution, an optional truncation, and optional class
  labels (a class-conditional generator is called ``G(z, y)`` with ``y`` int64 of shape (B,); one written for
  one-hot vectors (B, num_classes) has ``labels="one_hot"`` and converts them itself: :mod:`slimgen.models.labels`).
- ``InputSpec.draw(n, seed=...)`` gives a ``GenInputs`` batch; the same spec and seed give the
  same inputs for any model, so two models are compared on the same latents.
- ``InputSpec.image_range`` says how to read what it returns: the images' nominal range, [-1, 1]
  (tanh) unless the model was trained for another ([0, 1] for a sigmoid output; a linear output
  such as ProGAN's or StyleGAN's is nominally [-1, 1] and clamped).
- ``run(G, inputs)`` calls the generator and maps its output to (B, C, H, W) nominally in
  [-1, 1], what every verb works in. The model itself is never changed: exported graphs and
  saved folders keep the user's own output range (a drop-in replacement), and a discriminator
  is fed images in that range (:meth:`InputSpec.to_native`).

The spec is recorded in config.json (``inputs``) and travels on the module itself
(``inputs_of(module)`` / ``set_inputs(module, spec)``), so a plain ``nn.Module`` carries it
through every verb.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from slimgen.errors import ConfigError

Distribution = Literal["normal", "uniform"]
DEFAULT_RANGE: tuple[float, float] = (-1.0, 1.0)  # what every verb works in
DISTRIBUTIONS: tuple[str, ...] = ("normal", "uniform")
LABELS: tuple[str, ...] = ("index", "one_hot")
_ATTR = "_slimgen_inputs"
_MAX_LATENT_NUMEL = 1 << 24


@dataclass(frozen=True)
class InputSpec:
    """What one sample's inputs are.

    ``latent_shape``: shape of one latent, without the batch dimension (any rank >= 1).
    ``distribution``: ``normal`` (N(0, 1) per element) or ``uniform`` (U[-1, 1]).
    ``truncation``: for ``normal``, values with ``|z| > truncation`` are redrawn (the truncation
    trick); None draws the full distribution.
    ``num_classes``: class-conditional generators take labels ``y`` in [0, num_classes) as a
    second argument; None for unconditional ones.
    ``image_range``: (lo, hi), the nominal range of the images the generator returns (and its
    discriminator reads); ``(-1, 1)`` for tanh outputs, ``(0, 1)`` for sigmoid ones. The spec is
    the whole call contract: how to draw the inputs and how to read the outputs. ``labels``: how the
    model's own forward takes the labels, ``index`` (int64 (B,)) or ``one_hot`` (float (B, num_classes)); slimgen
    always draws and passes indices, and a ``one_hot`` model's parts convert them (:mod:`slimgen.models.labels`).
    """

    latent_shape: tuple[int, ...]
    distribution: Distribution = "normal"
    truncation: float | None = None
    num_classes: int | None = None
    image_range: tuple[float, float] = DEFAULT_RANGE
    labels: str = "index"

    def __post_init__(self) -> None:
        shape = self.latent_shape
        if isinstance(shape, int) or not isinstance(shape, Sequence) or isinstance(shape, str):
            raise ConfigError(f"latent_shape must be a list of positive integers, got {shape!r}")
        shape = tuple(shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ConfigError(f"latent_shape must be a non-empty list of positive integers, got {list(shape)!r}")
        numel = 1
        for s in shape:
            numel *= s
        if numel > _MAX_LATENT_NUMEL:
            raise ConfigError(f"latent_shape {list(shape)} has {numel} elements; at most {_MAX_LATENT_NUMEL} allowed")
        object.__setattr__(self, "latent_shape", shape)
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"latent distribution {self.distribution!r} unknown; allowed: {', '.join(DISTRIBUTIONS)}")
        t = self.truncation
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, int | float) or not t > 0 or t != t or t == float("inf"):
                raise ConfigError(f"truncation must be a positive number or null, got {t!r}")
            if self.distribution != "normal":
                raise ConfigError("truncation applies to the normal latent distribution only")
        c = self.num_classes
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ConfigError(f"num_classes must be a positive integer or null, got {c!r}")
        object.__setattr__(self, "image_range", check_range(self.image_range))
        if self.labels not in LABELS:
            raise ConfigError(f"labels must be one of {', '.join(LABELS)}, got {self.labels!r}")
        if self.labels == "one_hot" and c is None:
            raise ConfigError("labels one_hot needs num_classes (a class-conditional model)")

    # construction ---------------------------------------------------------------------------
    @classmethod
    def latent(cls, dim: int) -> InputSpec:
        """The classic (B, dim) standard-normal latent."""
        return cls((dim,))

    @classmethod
    def from_dict(cls, data: Any) -> InputSpec:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        if not isinstance(data, dict):
            raise ConfigError(f"inputs must be a mapping, got {type(data).__name__}")
        allowed = {"latent_shape", "distribution", "truncation", "num_classes", "image_range", "labels"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"inputs: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        if "latent_shape" not in data:
            raise ConfigError("inputs: latent_shape is required")
        shape = data["latent_shape"]
        if not isinstance(shape, list | tuple):
            raise ConfigError(f"inputs.latent_shape must be a list of positive integers, got {shape!r}")
        return cls(tuple(shape), data.get("distribution", "normal"), data.get("truncation"), data.get("num_classes"),
                   data.get("image_range", DEFAULT_RANGE), data.get("labels", "index"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; ``image_range`` only when it is not [-1, 1] and ``labels`` only when not ``index`` (what a
        folder without them means)."""
        out: dict[str, Any] = {"latent_shape": list(self.latent_shape), "distribution": self.distribution,
                               "truncation": self.truncation, "num_classes": self.num_classes}
        if self.image_range != DEFAULT_RANGE:
            out["image_range"] = list(self.image_range)
        if self.labels != "index":
            out["labels"] = self.labels
        return out

    # properties -----------------------------------------------------------------------------
    @property
    def latent_numel(self) -> int:
        """Elements of one latent (``prod(latent_shape)``)."""
        n = 1
        for s in self.latent_shape:
            n *= s
        return n

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def describe(self) -> str:
        """``z ~ N(0, I) of shape (100, 1, 1), y in [0, 10)``."""
        dist = "N(0, I)" if self.distribution == "normal" else "U[-1, 1]"
        if self.truncation is not None:
            dist += f" truncated at {self.truncation:g}"
        text = f"z ~ {dist} of shape {tuple(self.latent_shape)}"
        text += f", y in [0, {self.num_classes})" if self.conditional else ""
        text += " (taken one-hot)" if self.labels == "one_hot" else ""
        return text + (f", images in [{self.image_range[0]:g}, {self.image_range[1]:g}]"
                       if self.image_range != DEFAULT_RANGE else "")

    # outputs ----------------------------------------------------------------------------------------
    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """The generator's images (B, C, H, W) in ``image_range`` -> nominally [-1, 1] (not clamped)."""
        lo, hi = self.image_range
        return images if (lo, hi) == DEFAULT_RANGE else (images - lo) * (2.0 / (hi - lo)) - 1.0

    def to_native(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the model's ``image_range`` (what its discriminator was trained on)."""
        lo, hi = self.image_range
        return images if (lo, hi) == DEFAULT_RANGE else (images + 1.0) * ((hi - lo) / 2.0) + lo

    # drawing ------------------------------------------------------------------------------------
    def draw(self, n: int, *, seed: int = 0, classes: int | Sequence[int] | torch.Tensor | None = None) -> GenInputs:
        """``n`` inputs drawn with ``seed``: z (n, *latent_shape), y (n,) int64 for conditional models.

        ``classes`` fixes the labels (one int for all, or n of them); otherwise labels are drawn
        uniformly with the same seed, after the latents.
        """
        return self.sample(n, torch.Generator().manual_seed(int(seed)), classes=classes)

    def sample(self, n: int, gen: torch.Generator, *,
               classes: int | Sequence[int] | torch.Tensor | None = None) -> GenInputs:
        """Like :meth:`draw`, from the random generator ``gen`` (training loops draw each batch from the epoch's)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"number of samples must be a non-negative integer, got {n!r}")
        shape = (n, *self.latent_shape)
        if self.distribution == "uniform":
            z = torch.rand(shape, generator=gen) * 2 - 1
        else:
            z = torch.randn(shape, generator=gen)
            if self.truncation is not None:
                z = _truncate(z, float(self.truncation), gen)
        y = None
        if self.num_classes is not None:
            y = self._labels(n, classes, gen)
        elif classes is not None:
            raise ConfigError("this generator is not class-conditional (num_classes is not set): no class to choose")
        return GenInputs(z, y)

    def _labels(self, n: int, classes: Any, gen: torch.Generator) -> torch.Tensor:
        assert self.num_classes is not None
        if classes is None:
            return torch.randint(0, self.num_classes, (n,), generator=gen)
        y = torch.full((n,), int(classes)) if isinstance(classes, int) else torch.as_tensor(classes, dtype=torch.long)
        if y.shape != (n,):
            raise ConfigError(f"classes: expected one label or {n} labels, got shape {tuple(y.shape)}")
        if n and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ConfigError(f"class labels must lie in [0, {self.num_classes}), got {int(y.min())}..{int(y.max())}")
        return y


def _truncate(z: torch.Tensor, t: float, gen: torch.Generator) -> torch.Tensor:
    """Redraw elements with |z| > t until none is left (deterministic for a given generator)."""
    for _ in range(1000):
        bad = z.abs() > t
        count = int(bad.sum())
        if not count:
            return z
        z[bad] = torch.randn(count, generator=gen)
    return z.clamp(-t, t)


@dataclass(frozen=True)
class GenInputs:
    """A batch of generator inputs: latents z (B, *latent_shape) and labels y (B,) int64 or None."""

    z: torch.Tensor
    y: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.y is not None and (self.y.dim() != 1 or len(self.y) != len(self.z)):
            raise ConfigError(f"labels must have shape ({len(self.z)},), got {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.z)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """``{"z": z, "y": y}`` (``y`` left out when None), contiguous on the CPU: what a safetensors file stores."""
        out = {"z": self.z.detach().cpu().contiguous()}
        if self.y is not None:
            out["y"] = self.y.detach().cpu().contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> GenInputs:
        """The inverse of :meth:`to_tensors`."""
        if "z" not in tensors:
            raise ConfigError("stored generator inputs hold no 'z' tensor")
        return cls(tensors["z"], tensors.get("y"))

    def __getitem__(self, index: slice | torch.Tensor) -> GenInputs:
        return GenInputs(self.z[index], None if self.y is None else self.y[index])

    def args(self) -> tuple[torch.Tensor, ...]:
        """Positional arguments of the generator call: ``(z,)`` or ``(z, y)``."""
        return (self.z,) if self.y is None else (self.z, self.y)

    def to(self, device: torch.device | str) -> GenInputs:
        return GenInputs(self.z.to(device), None if self.y is None else self.y.to(device))

    def split(self, batch_size: int) -> Iterator[GenInputs]:
        """Consecutive batches of at most ``batch_size`` inputs."""
        for start in range(0, len(self), batch_size):
            yield self[start:start + batch_size]

    @staticmethod
    def cat(parts: Sequence[GenInputs]) -> GenInputs:
        ys = [p.y for p in parts]
        y = None if any(v is None for v in ys) else torch.cat([v for v in ys if v is not None])
        return GenInputs(torch.cat([p.z for p in parts]), y)


def run(generator: nn.Module, inputs: GenInputs) -> torch.Tensor:
    """Call ``generator`` on ``inputs``: (B, C, H, W) images, nominally in [-1, 1] (not clamped): the output
    mapped from the ``image_range`` of the contract the generator (or the module a DDP wrapper holds) carries."""
    out = generator(*inputs.args())
    spec = carried_inputs(generator) or carried_inputs(getattr(generator, "module", None))
    return out if spec is None else spec.to_unit(out)


def call(model: nn.Module, x: torch.Tensor | GenInputs) -> torch.Tensor:
    """``run(model, x)`` for generator inputs, ``model(x)`` for a plain tensor (images for a discriminator)."""
    return run(model, x) if isinstance(x, GenInputs) else model(x)


def check_range(value: Any) -> tuple[float, float]:
    """``image_range`` as (lo, hi) floats: two finite numbers with lo < hi; ConfigError else."""
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf") for v in value)
    if not ok or not value[0] < value[1]:
        raise ConfigError(f"image_range must be two finite numbers lo < hi (e.g. [0, 1] for a sigmoid output), "
                          f"got {value!r}")
    return float(value[0]), float(value[1])


def example_args(x: torch.Tensor | GenInputs) -> tuple[torch.Tensor, ...]:
    """Positional arguments of one call (what torch.onnx.export takes)."""
    return x.args() if isinstance(x, GenInputs) else (x,)


def tracer_inputs(x: torch.Tensor | GenInputs) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``example_inputs`` for torch-pruning: a tensor as it is, generator inputs as the tuple of call arguments."""
    return x.args() if isinstance(x, GenInputs) else x


# The calibration contract: every verb that calibrates (pruning importances, activation ranges
# of int8 quantization and of the int8 ONNX export) draws its inputs from the model's InputSpec
# with this one seed, apart from the evaluation latents (seed 0), and records (n, seed).
CALIBRATION_SEED = 1234


def calibration_inputs(spec: InputSpec, n: int, *, seed: int = CALIBRATION_SEED) -> GenInputs:
    """The ``n`` calibration inputs of a model with contract ``spec`` (the same for every verb)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"calibration set is empty: need at least 1 input, got {n!r}")
    return spec.draw(n, seed=seed)


def as_inputs(x: torch.Tensor | GenInputs) -> GenInputs:
    """A bare latent tensor (B, *latent_shape) as GenInputs; GenInputs unchanged."""
    return x if isinstance(x, GenInputs) else GenInputs(x)


def set_inputs(module: nn.Module, spec: InputSpec) -> nn.Module:
    """Attach ``spec`` to ``module`` (it travels with the module through every verb and deepcopy)."""
    if not isinstance(spec, InputSpec):
        raise TypeError(f"expected an InputSpec, got {type(spec).__name__}")
    object.__setattr__(module, _ATTR, spec)
    return module


def carried_inputs(module: nn.Module | None) -> InputSpec | None:
    """The InputSpec attached to ``module``, or None."""
    return getattr(module, _ATTR, None)


def inputs_of(module: nn.Module, default: InputSpec | None = None) -> InputSpec:
    """The InputSpec attached to ``module`` (or ``default``); ConfigError if there is none."""
    spec = getattr(module, _ATTR, None) or default
    if spec is None:
        raise ConfigError(
            f"{type(module).__name__} carries no input contract: attach one with "
            "slimgen.models.set_inputs(model, InputSpec(latent_shape=(...)))")
    return spec

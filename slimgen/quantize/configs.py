"""One frozen dataclass per quantization scheme, validated before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from slimgen.errors import ConfigError

LINEAR_BITS = (8, 4, 2)
SCALE_METHODS = ("minmax", "percentile", "mse")
KMEANS_INITS = ("linear", "density")
ENTROPY_CODERS = ("none", "lzma", "zlib")
OBSERVERS = ("minmax", "moving_average", "percentile", "histogram")
DEFAULT_PARTS = ("generator",)


def _check_parts(parts: tuple[str, ...]) -> None:
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ConfigError(f"parts must be a non-empty tuple of part names, got {parts!r}")


@dataclass(frozen=True)
class LinearQuant:
    """Uniform (affine) weight quantization of Conv/ConvTranspose/Linear weights.

    ``symmetric``: q in [-(2^(b-1)-1), 2^(b-1)-1], zero point 0; otherwise q in [0, 2^b - 1] with
    an integer zero point. ``per_channel``: one scale per output channel (dim 0 of Conv/Linear,
    dim 1 of ConvTranspose). ``scale``: clipping range from min/max, a percentile, or an MSE search.
    ``entropy_coding``: compress the integer codes on disk (lossless; the stored size shrinks
    when the codes are far from uniform, as trained weights are). ``output_layer_bits``: bits of
    the image output layer (the last Conv/Linear in module order; a generator's last layer often
    has a single output channel, so per-channel scales do not help it), None = ``bits``.
    """

    bits: int = 8
    symmetric: bool = True
    per_channel: bool = True
    scale: str = "minmax"
    percentile: float = 99.99
    entropy_coding: str = "none"
    output_layer_bits: int | None = None
    parts: tuple[str, ...] = DEFAULT_PARTS

    def __post_init__(self) -> None:
        if self.bits not in LINEAR_BITS:
            raise ConfigError(f"LinearQuant bits must be one of {list(LINEAR_BITS)}, got {self.bits!r}")
        if self.output_layer_bits is not None and self.output_layer_bits not in LINEAR_BITS:
            raise ConfigError(f"LinearQuant output_layer_bits must be one of {list(LINEAR_BITS)} or None, "
                              f"got {self.output_layer_bits!r}")
        if self.scale not in SCALE_METHODS:
            raise ConfigError(f"LinearQuant scale must be one of {list(SCALE_METHODS)}, got {self.scale!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"LinearQuant percentile must be in (50, 100], got {self.percentile!r}")
        if self.entropy_coding not in ENTROPY_CODERS:
            raise ConfigError(f"LinearQuant entropy_coding must be one of {list(ENTROPY_CODERS)}, got {self.entropy_coding!r}")
        _check_parts(self.parts)


@dataclass(frozen=True)
class KMeansQuant:
    """Weight sharing (Deep Compression): per tensor a codebook of 2^bits centroids + packed indices.

    ``init``: centroids start evenly spaced over [min, max] ("linear") or at quantiles ("density").
    ``finetune_centroids``: under :class:`QuantAwareTraining` the centroids themselves are trained
    (gradients summed per cluster); otherwise the float weights train through a straight-through
    estimator against a fixed codebook. ``entropy_coding``: compress the indices on disk.
    """

    bits: int = 4
    init: str = "linear"
    finetune_centroids: bool = False
    entropy_coding: str = "none"
    iterations: int = 30
    parts: tuple[str, ...] = DEFAULT_PARTS

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise ConfigError(f"KMeansQuant bits must be an integer in 1..8, got {self.bits!r}")
        if self.init not in KMEANS_INITS:
            raise ConfigError(f"KMeansQuant init must be one of {list(KMEANS_INITS)}, got {self.init!r}")
        if self.entropy_coding not in ENTROPY_CODERS:
            raise ConfigError(f"KMeansQuant entropy_coding must be one of {list(ENTROPY_CODERS)}, got {self.entropy_coding!r}")
        if self.iterations < 1:
            raise ConfigError(f"KMeansQuant iterations must be >= 1, got {self.iterations!r}")
        _check_parts(self.parts)


@dataclass(frozen=True)
class NaiveQuant:
    """The tutorial formula ``round(w / delta) * delta + min``, ``delta = (max - min) / 2^bits``.

    Kept only as the benchmark's "naive" baseline: it shifts every weight by ``min`` and can need
    2^bits + 1 levels. Stored through the codebook codec with ``bits + 1`` bit indices.
    """

    bits: int = 8
    parts: tuple[str, ...] = DEFAULT_PARTS

    def __post_init__(self) -> None:
        if self.bits not in LINEAR_BITS:
            raise ConfigError(f"NaiveQuant bits must be one of {list(LINEAR_BITS)}, got {self.bits!r}")
        _check_parts(self.parts)


@dataclass(frozen=True)
class ActivationQuant:
    """Static post-training int8 quantization of weights and activations.

    Weights become int8 per-channel symmetric; activation ranges are calibrated on
    ``calibration`` latents with ``observer`` when the model is exported to ONNX (ONNX Runtime
    QDQ: minmax -> MinMax, moving_average -> MinMax with moving average, percentile ->
    Percentile ``percentile``, histogram -> Entropy). The int8 model that runs is the exported one.
    ``float_output_layer``: the image output layer (the last Conv/Gemm) keeps fp32 weights and
    activations and runs in fp32, as is usual for first/last layers; on the DCGAN teacher it is
    2.9% of the MACs and 0.2% of the weights. ``entropy_coding``: compress the int8 weight codes on disk, as for :class:`LinearQuant`.
    ``per_channel``, ``symmetric``, ``scale``: the int8 weights' scheme, as for :class:`LinearQuant`
    (the int8 ONNX graph quantizes its weights the same way).
    Defaults chosen by FID of the int8 ONNX DCGAN teacher (``bench/sweep_int8.py``, 2,000 samples):
    1.199x the teacher's with every layer int8 at percentile 99.999, 1.012x with these defaults.
    """

    bits: int = 8
    observer: str = "percentile"
    calibration: int = 512
    percentile: float = 99.5
    float_output_layer: bool = True
    entropy_coding: str = "none"
    parts: tuple[str, ...] = DEFAULT_PARTS
    per_channel: bool = True
    symmetric: bool = True
    scale: str = "minmax"

    def __post_init__(self) -> None:
        if self.scale not in SCALE_METHODS:
            raise ConfigError(f"ActivationQuant scale must be one of {list(SCALE_METHODS)}, got {self.scale!r}")
        if self.bits != 8:
            raise ConfigError(f"ActivationQuant bits must be 8 (ONNX Runtime int8), got {self.bits!r}")
        if self.observer not in OBSERVERS:
            raise ConfigError(f"ActivationQuant observer must be one of {list(OBSERVERS)}, got {self.observer!r}")
        if not isinstance(self.calibration, int) or self.calibration < 1:
            raise ConfigError(f"ActivationQuant calibration must be a positive number of latents, got {self.calibration!r}")
        if not isinstance(self.percentile, int | float) or not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"ActivationQuant percentile must be in (50, 100], got {self.percentile!r}")
        if self.entropy_coding not in ENTROPY_CODERS:
            raise ConfigError(f"ActivationQuant entropy_coding must be one of {list(ENTROPY_CODERS)}, "
                              f"got {self.entropy_coding!r}")
        _check_parts(self.parts)


@dataclass(frozen=True)
class QuantAwareTraining:
    """Quantization-aware fine-tuning: fake-quantized weights (straight-through estimator)
    trained with the adversarial fine-tuning loop for ``epochs``, then quantized for real.

    ``teacher_weight``: L1 pull towards the float model's images on the same latents (the
    model before quantization is the teacher). ``steps_per_epoch``: None = one pass over the data.
    """

    weights: LinearQuant | KMeansQuant = field(default_factory=lambda: LinearQuant(bits=4))
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 64
    teacher_weight: float = 1.0
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.weights, LinearQuant | KMeansQuant):
            raise ConfigError(f"QuantAwareTraining weights must be LinearQuant or KMeansQuant, got {type(self.weights).__name__}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"QuantAwareTraining epochs must be a positive integer, got {self.epochs!r}")
        if not self.lr > 0:
            raise ConfigError(f"QuantAwareTraining lr must be > 0, got {self.lr!r}")
        if self.teacher_weight < 0:
            raise ConfigError(f"QuantAwareTraining teacher_weight must be >= 0, got {self.teacher_weight!r}")


WEIGHT_SPECS = "int8, int4, int2, kmeans1..kmeans8, naive8, naive4, naive2"


def parse_weights(spec: str, *, per_channel: bool = True, symmetric: bool = True, scale: str = "minmax",
                  init: str = "linear", entropy_coding: str = "none") -> LinearQuant | KMeansQuant | NaiveQuant:
    """A weight scheme from its short name (``int4``, ``kmeans4``, ``naive8``) plus options."""
    for prefix in ("int", "kmeans", "naive"):
        digits = spec[len(prefix):]
        if spec.startswith(prefix) and digits.isdigit():
            bits = int(digits)
            if prefix == "int":
                return LinearQuant(bits=bits, symmetric=symmetric, per_channel=per_channel, scale=scale,
                                   entropy_coding=entropy_coding)
            if prefix == "kmeans":
                return KMeansQuant(bits=bits, init=init, entropy_coding=entropy_coding)
            return NaiveQuant(bits=bits)
    raise ConfigError(f"unknown weight scheme {spec!r}; use one of {WEIGHT_SPECS}")


#: the weight schemes of a ``quantize`` step, by the name a recipe's ``weights: {method: NAME}`` gives
WEIGHT_METHODS: dict[str, type] = {"linear": LinearQuant, "kmeans": KMeansQuant, "naive": NaiveQuant}


@dataclass(frozen=True)
class Quantization:
    """Weights (linear, k-means or naive) and/or int8 activations as one step (the recipe's ``quantize``).

    int8 activations store int8 linear weights (the int8 graph quantizes every weight to int8):
    ``weights`` may give that int8 scheme (``per_channel``, ``symmetric``, ``scale``,
    ``entropy_coding``), and any other scheme with activations is a ConfigError rather than a
    silent re-quantization to int8. :attr:`steps` is what :func:`slimgen.quantize.quantize` applies.
    """

    weights: LinearQuant | KMeansQuant | NaiveQuant | None = None
    activations: ActivationQuant | None = None

    def __post_init__(self) -> None:
        if self.weights is None and self.activations is None:
            raise ConfigError("quantize needs 'weights', 'activations' or both")
        w = self.weights
        if self.activations is not None and w is not None and not (isinstance(w, LinearQuant) and w.bits == 8
                                                                    and w.output_layer_bits in (None, 8)):
            what = f"{type(w).__name__}(bits={w.bits})"
            raise ConfigError(f"int8 activations need int8 linear weights (the int8 graph re-quantizes every weight "
                              f"to int8), got {what}: quantize the weights alone, or use linear int8 weights")

    @property
    def steps(self) -> tuple[LinearQuant | KMeansQuant | NaiveQuant | ActivationQuant, ...]:
        """What :func:`slimgen.quantize.quantize` applies, in order: the weights (every layer, the image output
        layer included), then the int8 activations with the weights' int8 scheme (their ``float_output_layer``
        keeps that layer's activations, and without ``weights`` its weights too, in float)."""
        w, act = self.weights, self.activations
        if act is None or w is None:
            return tuple(c for c in (w, act) if c is not None)
        assert isinstance(w, LinearQuant)
        entropy = w.entropy_coding if w.entropy_coding != "none" else act.entropy_coding
        return w, replace(act, per_channel=w.per_channel, symmetric=w.symmetric, scale=w.scale, entropy_coding=entropy)


def parse_quantization(values: Any, where: str) -> Quantization:
    """A recipe's ``quantize: {weights: {method: linear|kmeans|naive, ...}, activations: {...}}``."""
    from slimgen.methods import build_config, show

    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping with 'weights' and/or 'activations', got {show(values)}")
    unknown = sorted(set(values) - {"weights", "activations"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: activations, weights")
    weights = None
    if values.get("weights") is not None:
        if not isinstance(values["weights"], dict):
            raise ConfigError(f"{where}, weights: expected a mapping (method: {'|'.join(WEIGHT_METHODS)}, bits: ...), "
                              f"got {type(values['weights']).__name__} {show(values['weights'])}")
        w = dict(values["weights"])
        method = w.pop("method", "linear")
        if not isinstance(method, str) or method not in WEIGHT_METHODS:
            raise ConfigError(f"{where}, weights: method must be one of {', '.join(WEIGHT_METHODS)}, got {method!r}")
        weights = build_config(WEIGHT_METHODS[method], w, f"{where}, weights")
    activations = None
    if values.get("activations") is not None:
        activations = build_config(ActivationQuant, values["activations"], f"{where}, activations")
    try:
        return Quantization(weights, activations)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def parse_activations(spec: str | None, **settings: Any) -> ActivationQuant | None:
    """The CLI's ``--activations``: None, or ``int8`` with ActivationQuant ``settings``."""
    if spec is None:
        return None
    if spec != "int8":
        raise ConfigError(f"--activations supports int8 only, got {spec!r}")
    return ActivationQuant(bits=8, **settings)

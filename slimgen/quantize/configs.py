"""One frozen dataclass per quantization scheme, validated before any work starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from slimgen.errors import ConfigError
from slimgen.quantize.linear import SCALE_TYPES

LINEAR_BITS = (8, 7, 6, 5, 4, 3, 2)  # codes of any width are packed bit by bit (quantize/codecs.py)
NAIVE_BITS = (8, 4, 2)
SCALE_METHODS = ("minmax", "percentile", "mse")
KMEANS_INITS = ("linear", "density")
ENTROPY_CODERS = ("none", "lzma", "zlib")
OBSERVERS = ("minmax", "moving_average", "percentile", "histogram")
DEFAULT_PARTS = ("generator",)


def _check_scale_type(what: str, scale_type: str) -> None:
    if scale_type not in SCALE_TYPES:
        raise ConfigError(f"{what} scale_type must be one of {list(SCALE_TYPES)} (float32 scales or powers of two), "
                          f"got {scale_type!r}")


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
    ``layer_bits``: mixed precision, a layer's name (as in ``model.named_modules()``, e.g. ``net.0``)
    -> its own bit width in place of ``bits`` (and of ``output_layer_bits``): in a DCGAN the latent
    layer holds most weights and few MACs, so its width sets the stored size (bench/results/kernel.md).
    ``scale_type``: float32 scales, or powers of two (fixed point: ``q = round(w * 2^p)`` with an
    integer exponent ``p`` per tensor or channel, for hardware that shifts instead of multiplying;
    the float scale rounded up, so at most one bit of resolution is lost).
    """

    bits: int = 8
    symmetric: bool = True
    per_channel: bool = True
    scale: str = "minmax"
    percentile: float = 99.99
    entropy_coding: str = "none"
    output_layer_bits: int | None = None
    scale_type: str = "float"
    parts: tuple[str, ...] = DEFAULT_PARTS
    layer_bits: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bits not in LINEAR_BITS:
            raise ConfigError(f"LinearQuant bits must be one of {list(LINEAR_BITS)}, got {self.bits!r}")
        if not isinstance(self.layer_bits, Mapping):
            raise ConfigError(f"LinearQuant layer_bits must map layer names to bits, got {type(self.layer_bits).__name__}")
        for name, bits in self.layer_bits.items():
            if isinstance(bits, bool) or bits not in LINEAR_BITS:
                raise ConfigError(f"LinearQuant layer_bits[{name!r}] must be one of {list(LINEAR_BITS)}, got {bits!r}")
        object.__setattr__(self, "layer_bits", {str(k): int(v) for k, v in self.layer_bits.items()})
        if self.output_layer_bits is not None and self.output_layer_bits not in LINEAR_BITS:
            raise ConfigError(f"LinearQuant output_layer_bits must be one of {list(LINEAR_BITS)} or None, "
                              f"got {self.output_layer_bits!r}")
        if self.scale not in SCALE_METHODS:
            raise ConfigError(f"LinearQuant scale must be one of {list(SCALE_METHODS)}, got {self.scale!r}")
        _check_scale_type("LinearQuant", self.scale_type)
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
        if self.bits not in NAIVE_BITS:
            raise ConfigError(f"NaiveQuant bits must be one of {list(NAIVE_BITS)}, got {self.bits!r}")
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
    ``scale_type="pow2"``: weight and activation scales are powers of two (fixed point); the
    exported QDQ model's scales are rounded up to powers of two after calibration.
    Defaults chosen by FID of the int8 ONNX DCGAN teacher (``bench/sweep_int8.py``, 2,000 samples):
    1.199x the teacher's with every layer int8 at percentile 99.999, 1.012x with these defaults.
    """

    bits: int = 8
    observer: str = "percentile"
    calibration: int = 512
    percentile: float = 99.5
    float_output_layer: bool = True
    entropy_coding: str = "none"
    scale_type: str = "float"
    parts: tuple[str, ...] = DEFAULT_PARTS
    per_channel: bool = True
    symmetric: bool = True
    scale: str = "minmax"

    def __post_init__(self) -> None:
        if self.scale not in SCALE_METHODS:
            raise ConfigError(f"ActivationQuant scale must be one of {list(SCALE_METHODS)}, got {self.scale!r}")
        _check_scale_type("ActivationQuant", self.scale_type)
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


WEIGHT_SPECS = "int8, int4, int2 (int2..int8), kmeans1..kmeans8, naive8, naive4, naive2"


def parse_weights(spec: str, *, per_channel: bool = True, symmetric: bool = True, scale: str = "minmax",
                  init: str = "linear", entropy_coding: str = "none", scale_type: str = "float"
                  ) -> LinearQuant | KMeansQuant | NaiveQuant:
    """A weight scheme from its short name (``int4``, ``kmeans4``, ``naive8``) plus options
    (``scale_type`` applies to ``int*`` only; "pow2" with another scheme is an error)."""
    for prefix in ("int", "kmeans", "naive"):
        digits = spec[len(prefix):]
        if spec.startswith(prefix) and digits.isdigit():
            bits = int(digits)
            if prefix == "int":
                return LinearQuant(bits=bits, symmetric=symmetric, per_channel=per_channel, scale=scale,
                                   entropy_coding=entropy_coding, scale_type=scale_type)
            if scale_type != "float":
                raise ConfigError(f"scale_type {scale_type!r} applies to linear weights (int8, int4, int2), not {spec!r}")
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
        if self.activations is not None and w is not None and not (
                isinstance(w, LinearQuant) and w.bits == 8 and w.output_layer_bits in (None, 8)
                and all(b == 8 for b in w.layer_bits.values())):
            what = f"{type(w).__name__}(bits={w.bits})"
            if isinstance(w, LinearQuant) and w.bits == 8:
                low = {**({"output layer": w.output_layer_bits} if w.output_layer_bits else {}), **w.layer_bits}
                what = "LinearQuant with layers below 8 bits (" + ", ".join(f"{k}: {b}" for k, b in low.items() if b != 8) + ")"
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


def _parse_weights_mapping(values: Any, where: str, methods: dict[str, type] = WEIGHT_METHODS) -> Any:
    """A recipe's ``weights: {method: linear|kmeans|naive, bits: ..., ...}`` -> that scheme's config."""
    from slimgen.methods import build_config, show

    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping (method: {'|'.join(methods)}, bits: ...), "
                          f"got {type(values).__name__} {show(values)}")
    w = dict(values)
    method = w.pop("method", "linear")
    if not isinstance(method, str) or method not in methods:
        raise ConfigError(f"{where}: method must be one of {', '.join(methods)}, got {method!r}")
    return build_config(methods[method], w, where)


def parse_quantize_aware(values: Any, where: str) -> QuantAwareTraining:
    """A recipe's ``quantize_aware: {weights: {method: linear|kmeans, ...}, epochs: ..., ...}`` (the weights
    as a ``quantize`` step gives them; default linear int4)."""
    from slimgen.methods import build_config, show

    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping (weights, epochs, lr, ...), got {show(values)}")
    rest = {k: v for k, v in values.items() if k != "weights"}
    config = build_config(QuantAwareTraining, rest, where)
    if values.get("weights") is None:
        return config
    qat_methods = {k: v for k, v in WEIGHT_METHODS.items() if k != "naive"}
    return replace(config, weights=_parse_weights_mapping(values["weights"], f"{where}, weights", qat_methods))


def parse_quantization(values: Any, where: str) -> Quantization:
    """A recipe's ``quantize: {weights: {method: linear|kmeans|naive, ...}, activations: {...}}``."""
    from slimgen.methods import build_config, show

    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping with 'weights' and/or 'activations', got {show(values)}")
    unknown = sorted(set(values) - {"weights", "activations"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: activations, weights")
    weights = None if values.get("weights") is None else _parse_weights_mapping(values["weights"], f"{where}, weights")
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

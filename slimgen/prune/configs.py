"""One frozen dataclass per pruning method, validated before any work starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from slimgen.errors import ConfigError

Scope = Literal["layerwise", "global"]
CalibrationLoss = Literal["auto", "adversarial", "output_norm", "output_projection"]
_SCOPES = ("layerwise", "global")
_CRITERIA = ("taylor", "fisher")
_LOSSES = get_args(CalibrationLoss)
_IMPORTANCES = ("l1", "l2", "bn_scale", "activation", "taylor", "auto")
_CHANNEL_SCOPES = ("uniform", "global")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be in the open interval (0, 1), got {value}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _check_target(sparsity: float | None, threshold: float | None) -> None:
    """Exactly one of ``sparsity`` (fraction of weights zeroed) and ``threshold`` (score below which a weight goes)."""
    if (sparsity is None) == (threshold is None):
        raise ConfigError(f"give exactly one of sparsity and threshold, got sparsity={sparsity}, threshold={threshold}")
    if sparsity is not None:
        _check_fraction("sparsity", sparsity)
    if threshold is not None and not threshold > 0:
        raise ConfigError(f"threshold must be > 0, got {threshold}")


@dataclass(frozen=True)
class MagnitudePruning:
    """Zero the weights of smallest |w| in the Conv/ConvTranspose/Linear layers (unstructured).

    ``scope="global"`` (default) ranks |w| over all layers, ``"layerwise"`` removes ``sparsity`` of
    every layer (bench/results/defaults.md compares them).
    """

    sparsity: float | None = 0.5
    threshold: float | None = None
    scope: Scope = "global"

    def __post_init__(self) -> None:
        _check_target(self.sparsity, self.threshold)
        _check_choice("scope", self.scope, _SCOPES)


@dataclass(frozen=True)
class RandomPruning:
    """Zero a random fraction ``sparsity`` of the weights (the baseline any criterion must beat)."""

    sparsity: float = 0.5
    scope: Scope = "layerwise"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fraction("sparsity", self.sparsity)
        _check_choice("scope", self.scope, _SCOPES)


@dataclass(frozen=True)
class GradientPruning:
    """Zero the weights of least gradient-based importance over calibration inputs (unstructured).

    ``criterion="taylor"`` scores a weight by sum over batches of |w * dL/dw| (first-order
    Taylor); ``"fisher"`` by the sum of squared gradients (dL/dw)^2. A generator has no
    labels, so L is, with ``loss="adversarial"``, the non-saturating generator loss under the
    discriminator (what the generator was trained on), or with ``"output_norm"`` the mean
    squared output 0.5 * mean(f(x)^2), which needs nothing but the model, or with
    ``"output_projection"`` a random projection of the outputs, sum(v * f(x)), v ~ N(0, 1) drawn
    anew per batch: then |w * dL/dw| ranks weights by how far zeroing them moves the outputs
    (Optimal Brain Damage with a Gauss-Newton Hessian; small batches give more, noisier draws).
    ``"auto"`` takes the adversarial loss when pruning the generator of a bundle that has a
    discriminator, else the output norm; the step recorded in config.json says which was used.
    """

    sparsity: float | None = 0.5
    threshold: float | None = None
    scope: Scope = "global"
    criterion: Literal["taylor", "fisher"] = "taylor"
    loss: CalibrationLoss = "auto"
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check_target(self.sparsity, self.threshold)
        _check_choice("scope", self.scope, _SCOPES)
        _check_choice("criterion", self.criterion, _CRITERIA)
        _check_choice("loss", self.loss, _LOSSES)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ThresholdPruning:
    """The naive baseline: zero every weight with |w| < ``threshold``, whatever the layer."""

    threshold: float = 0.01

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ConfigError(f"threshold must be > 0, got {self.threshold}")


@dataclass(frozen=True)
class KernelPruning:
    """Crop the spatial kernel of convolutions to ``size`` taps per dim, keeping every output pixel in place.

    ``layers``: the layers to crop (names as in ``model.named_modules()``, e.g. ``net.3``); default:
    every Conv2d/ConvTranspose2d with a larger kernel that can be cropped so, except the layer writing
    the image. A stride-2 4x4 transposed convolution cropped to 2 reads one input tap per output pixel
    instead of four (a quarter of its MACs). See :mod:`slimgen.prune.kernel`. ``required``: where no layer
    can be cropped (e.g. a generator of upsampling + 3x3 convolutions), False makes the step change nothing
    and say why (a warning and the step's ``kept_layers``) instead of a ConfigError: for recipes meant for
    any generator.
    """

    size: int = 2
    layers: tuple[str, ...] = ()
    required: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"size must be an integer >= 1 (taps per spatial dim), got {self.size!r}")
        if not isinstance(self.required, bool):
            raise ConfigError(f"required must be true or false, got {self.required!r}")
        if isinstance(self.layers, str):
            object.__setattr__(self, "layers", (self.layers,))
        object.__setattr__(self, "layers", tuple(str(n) for n in self.layers))


@dataclass(frozen=True)
class LowRankFactorization:
    """Replace layers by two of lower rank (truncated SVD of the weight): fewer weights and MACs, same channels.

    ``rank``: the rank of every chosen layer, or ``energy``: per layer, the smallest rank that keeps
    this fraction of the weight's squared singular values (give one; default ``energy`` 0.95, which is
    rank 32 on zoo:dcgan-fmnist's latent layer: bench/results/lowrank_teacher.md, recipes/default.yaml).
    ``side``: ``input`` (a 1x1 map of the input channels to ``rank``, then the layer) or ``output``
    (the layer to ``rank`` channels, then a 1x1 map). ``layers``: the layers to factorize (names as in
    ``model.named_modules()``); default: every ungrouped Conv2d / ConvTranspose2d / Linear, except the
    layer writing the output, whose factorized form holds fewer weights. See
    :mod:`slimgen.models.factorized`. ``teacher`` (a recipe step): factorize the run's teacher the
    same way for the steps after this one that learn from it (``distill``, ``finetune``). A student whose
    latent layer sees only ``rank`` directions of the latent cannot follow a teacher that uses all of
    them; the factorized teacher is a target it can reach (bench/results/frontier_avx2.md). Quality is
    still reported against the run's own teacher. ``required``: where a named layer cannot be factorized
    so that it stores fewer weights (a VAE's 16-wide latent at rank 32), False leaves it whole and says why
    (a warning and the step's ``kept_layers``; a step with nothing left to factorize changes nothing)
    instead of a ConfigError: for recipes meant for any generator.
    """

    rank: int | None = None
    energy: float | None = None
    side: Literal["input", "output"] = "input"
    layers: tuple[str, ...] = ()
    teacher: bool = False
    required: bool = True

    def __post_init__(self) -> None:
        if self.rank is None and self.energy is None:
            object.__setattr__(self, "energy", 0.95)
        if self.rank is not None and self.energy is not None:
            raise ConfigError(f"give rank or energy, not both (got rank={self.rank}, energy={self.energy})")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ConfigError(f"rank must be an integer >= 1, got {self.rank!r}")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ConfigError(f"energy must be in (0, 1] (fraction of squared singular values kept), got {self.energy}")
        _check_choice("side", self.side, ("input", "output"))
        if not isinstance(self.teacher, bool):
            raise ConfigError(f"teacher must be true or false (factorize the run's teacher too), got {self.teacher!r}")
        if not isinstance(self.required, bool):
            raise ConfigError(f"required must be true or false, got {self.required!r}")
        if isinstance(self.layers, str):
            object.__setattr__(self, "layers", (self.layers,))
        object.__setattr__(self, "layers", tuple(str(n) for n in self.layers))


@dataclass(frozen=True)
class ChannelPruning:
    """Remove a fraction ``ratio`` of the channels (feature maps / features) of every prunable layer.

    ``importance``: ``l1``/``l2`` norm of the coupled weights, ``bn_scale`` |gamma| of the
    BatchNorm in the group (network slimming; groups without a norm fall back to l1),
    ``activation`` mean |feature map| on calibration inputs, ``taylor`` first-order Taylor
    |w * dL/dw| with the loss of :class:`GradientPruning`. ``scope="uniform"`` removes ``ratio``
    of every layer; ``"global"`` removes ``ratio`` of all channels, ranked across layers, but
    at most ``max_layer_ratio`` of any one layer. The image output layer, the latent input and
    the layers named in ``ignore`` keep their channels. ``layer_ratios`` maps a layer's name (as in
    ``model.named_modules()``, e.g. ``net.0``) to its own ratio in place of ``ratio``, to shape the
    student: in a DCGAN the 7x7 -> 14x14 layer holds most MACs and the latent layer most weights.
    Default importance ``auto``: ``taylor``
    where calibration inputs are available (a model folder's generator: the calibration contract's
    inputs; or ``calibration=`` given), else ``l1`` (every tuned channel row of bench/results/prune.md
    uses Taylor; bench/results/defaults.md compares it with l1 in the reporting space).
    """

    ratio: float = 0.5
    importance: Literal["l1", "l2", "bn_scale", "activation", "taylor", "auto"] = "auto"
    scope: Literal["uniform", "global"] = "uniform"
    max_layer_ratio: float = 0.9
    ignore: tuple[str, ...] = ()
    loss: CalibrationLoss = "auto"
    batch_size: int = 64
    layer_ratios: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fraction("ratio", self.ratio)
        if not isinstance(self.layer_ratios, Mapping):
            raise ConfigError(f"layer_ratios must map layer names to ratios, got {type(self.layer_ratios).__name__}")
        for name, value in self.layer_ratios.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"layer_ratios[{name!r}] must be a number in (0, 1), got {value!r}")
            _check_fraction(f"layer_ratios[{name!r}]", value)
        object.__setattr__(self, "layer_ratios", {str(k): float(v) for k, v in self.layer_ratios.items()})
        _check_fraction("max_layer_ratio", self.max_layer_ratio)
        _check_choice("importance", self.importance, _IMPORTANCES)
        _check_choice("scope", self.scope, _CHANNEL_SCOPES)
        _check_choice("loss", self.loss, _LOSSES)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "ignore", tuple(self.ignore))


@dataclass(frozen=True)
class SparsityTraining:
    """L1 penalty added to the generator loss in fine-tuning: ``l1_weight * sum|w|`` over
    Conv/ConvTranspose/Linear weights plus ``l1_bn * sum|gamma|`` over norm-layer scales
    (network slimming, Liu et al. 2017), so later magnitude or ``bn_scale`` pruning loses less."""

    l1_weight: float = 0.0
    l1_bn: float = 1e-4

    def __post_init__(self) -> None:
        if self.l1_weight < 0 or self.l1_bn < 0:
            raise ConfigError(f"l1_weight and l1_bn must be >= 0, got {self.l1_weight} and {self.l1_bn}")
        if self.l1_weight == 0 and self.l1_bn == 0:
            raise ConfigError("SparsityTraining needs l1_weight > 0 or l1_bn > 0 (both are 0)")




@dataclass(frozen=True)
class LatentRotation:
    """Rotate the latent basis of a generator before pruning it (:func:`slimgen.prune.rotate_latent`).

    ``steps`` Adam steps at ``lr`` over orthogonal matrices Q (torch's ``orthogonal``
    parametrization, started at the identity) minimising the L1 norm of the latent layer's
    weights in the rotated basis.
    """

    steps: int = 1500
    lr: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")

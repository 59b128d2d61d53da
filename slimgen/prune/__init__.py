"""Pruning: unstructured (masks) and structured (channels really removed), schedules and sparsity training.

One verb, :func:`prune`, applies any method config (one frozen dataclass per method) to an
``nn.Module`` or a model folder's ``ModelBundle``.
"""

from slimgen.prune.api import PRUNERS, bundle_context, prune, prune_module, register_pruner
from slimgen.prune.calibration import PruneContext
from slimgen.prune.configs import (
    ChannelPruning,
    GradientPruning,
    KernelPruning,
    LatentRotation,
    LowRankFactorization,
    MagnitudePruning,
    RandomPruning,
    SparsityTraining,
    ThresholdPruning,
)
from slimgen.prune.rotation import rotate_latent
from slimgen.prune.schedules import (
    GradualPruning,
    IterativePruning,
    cubic_sparsity,
    prune_gradually,
    prune_iteratively,
)
from slimgen.prune.sparsity import penalty_for, sparsity_penalty
from slimgen.prune.unstructured import attach_masks, make_permanent, sparsity_of

__all__ = [
    "PRUNERS", "ChannelPruning", "GradientPruning", "GradualPruning", "IterativePruning", "KernelPruning",
    "LatentRotation", "LowRankFactorization", "MagnitudePruning",
    "PruneContext", "RandomPruning", "SparsityTraining", "ThresholdPruning", "attach_masks", "bundle_context",
    "cubic_sparsity", "make_permanent", "penalty_for", "prune", "prune_gradually", "prune_iteratively",
    "prune_module", "register_pruner", "rotate_latent", "sparsity_of", "sparsity_penalty",
]

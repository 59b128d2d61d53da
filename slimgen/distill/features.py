"""Intermediate features for distillation: which layers to compare, taps that record them, 1x1 adapters.

Layers are matched by the spatial size of their output, as in GAN Compression: for every
(H, W) that both networks produce inside (norm layers and activations, not the image output),
the last such layer of each network forms a pair. Architecture-agnostic: a pruned teacher or
a slimmer zoo model pairs the same way as a user's generator. A generator whose norms and
activations are functions or modules made in forward (no such submodule makes a 4-D map) pairs
its convolutions instead, less any with the image's channel count (the image, toRGB outputs); one whose convolutions are functions too (a
hand-written StyleGAN2 modulated conv calling ``F.conv2d``) pairs whatever submodules make 4-D maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slimgen.models.inputs import GenInputs, InputSpec, call
from slimgen.models.mode import in_mode
from slimgen.train.objectives import tap

__all__ = ["TAPPED", "FeaturePair", "build_adapters", "feature_shapes", "match_layers", "tap"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Hardswish)
TAPPED = (*_NORMS, *_ACTIVATIONS)


@dataclass(frozen=True)
class FeaturePair:
    """Student layer ``student`` (C_s channels) is compared with teacher layer ``teacher`` (C_t) at ``size`` (H, W)."""

    student: str
    teacher: str
    size: tuple[int, int]
    student_channels: int
    teacher_channels: int

    @property
    def key(self) -> str:
        """The adapter's name in an ``nn.ModuleDict`` (dots are not allowed there)."""
        return self.student.replace(".", "_")


@torch.no_grad()
def feature_shapes(model: nn.Module, z: torch.Tensor | GenInputs,
                   kinds: tuple[type[nn.Module], ...] = TAPPED) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, (C, H, W)) of every ``kinds`` layer's output that is a 4-D map, in forward order, for inputs z; a
    map with the generated image's channel count (the image, a toRGB output of a lower scale) is left out."""
    names = [n for n, m in model.named_modules() if n and isinstance(m, kinds)]
    with in_mode(model), tap(model, names) as store:  # a dict keeps the order of first calls: forward order
        image = call(model, z)
    return [(n, tuple(t.shape[1:])) for n, t in store.items()  # type: ignore[misc]
            if isinstance(t, torch.Tensor) and t.ndim == 4 and t.shape[1] != image.shape[1]]


def _last_by_size(shapes: list[tuple[str, tuple[int, int, int]]]) -> dict[tuple[int, int], tuple[str, int]]:
    """Spatial size (H, W) -> (name, channels) of the last layer producing it."""
    out: dict[tuple[int, int], tuple[str, int]] = {}
    for name, (c, h, w) in shapes:
        out[(h, w)] = (name, c)
    return out


def match_layers(student: nn.Module, teacher: nn.Module, inputs: InputSpec | int) -> list[FeaturePair]:
    """Pairs of student/teacher layers with the same output spatial size, ordered by teacher forward order.

    ``inputs``: the generators' input contract (a plain int: the classic (B, latent_dim) latent).
    """
    z = (InputSpec.latent(inputs) if isinstance(inputs, int) else inputs).draw(2, seed=0)
    device = next(student.parameters()).device
    t_device = next(teacher.parameters()).device
    s_shapes, t_shapes = feature_shapes(student, z.to(device)), feature_shapes(teacher, z.to(t_device))
    for kinds in ((nn.modules.conv._ConvNd,), (nn.Module,)):  # norms and activations written as functions: the
        if s_shapes and t_shapes:  # convolutions' outputs; convolutions written as functions too (a hand-written
            break  # modulated conv): any submodule's 4-D output
        s_shapes = feature_shapes(student, z.to(device), kinds)
        t_shapes = feature_shapes(teacher, z.to(t_device), kinds)
    s_last = _last_by_size(s_shapes)
    t_last = _last_by_size(t_shapes)
    order = list(dict.fromkeys((h, w) for _, (_, h, w) in t_shapes))
    return [FeaturePair(s_last[size][0], t_last[size][0], size, s_last[size][1], t_last[size][1])
            for size in order if size in s_last]


class FeatureAdapters(nn.ModuleDict):
    """1x1 convs keyed by :attr:`FeaturePair.key`; calling it maps a dict of student maps at once.

    A module with a ``forward`` so that DistributedDataParallel can wrap it (a plain
    ``ModuleDict`` cannot be called); its state-dict keys are those of the ``ModuleDict``.
    """

    def forward(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """key -> adapter(map (B, C_s, H, W)) (B, C_t, H, W), for every key of ``maps``."""
        return {key: self[key](x) for key, x in maps.items()}


def build_adapters(pairs: list[FeaturePair]) -> FeatureAdapters:
    """One 1x1 Conv2d per pair mapping the student's C_s channels to the teacher's C_t."""
    return FeatureAdapters({p.key: nn.Conv2d(p.student_channels, p.teacher_channels, 1) for p in pairs})

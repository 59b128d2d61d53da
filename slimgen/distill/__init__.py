"""Knowledge distillation: a teacher generator trains a slimmer or pruned student.

``distill(student, teacher, Distillation(losses=DistillLosses(output=1, feature=1, adversarial=0.1)),
data=...)`` returns the trained student as a model bundle; ``slim_student(teacher, 0.5)`` builds
a student with half the channels per level.
"""

from slimgen.distill.api import check_pair, distill
from slimgen.distill.config import LOSS_TERMS, Distillation, DistillLosses
from slimgen.distill.features import FeaturePair, build_adapters, feature_shapes, match_layers, tap
from slimgen.distill.student import SlimStudent, slim_student, slim_widths
from slimgen.distill.task import Critics, DistillTask

__all__ = [
    "LOSS_TERMS",
    "Critics",
    "DistillLosses",
    "DistillTask",
    "Distillation",
    "FeaturePair",
    "SlimStudent",
    "build_adapters",
    "check_pair",
    "distill",
    "feature_shapes",
    "match_layers",
    "slim_student",
    "slim_widths",
    "tap",
]

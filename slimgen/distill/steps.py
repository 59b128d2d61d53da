"""``distill`` and ``slim_student`` as registered methods (recipe steps, ``slimgen apply``)."""

from __future__ import annotations

from slimgen.distill.api import distill, needs_real_images
from slimgen.distill.config import Distillation
from slimgen.distill.student import SlimStudent, slim_student
from slimgen.methods import MethodContext, register_method
from slimgen.models import ModelBundle
from slimgen.train.finetune import scorer_for


@register_method("distill", Distillation)
def distill_step(bundle: ModelBundle, config: Distillation, ctx: MethodContext) -> ModelBundle:
    """Distil the run's teacher (or what an earlier step made of it: :attr:`MethodContext.learn_from`) into
    ``bundle``: on the run's real images when a loss term needs them (as the CLI), else data-free; best epoch
    against the run's own reference, in a training space."""
    score = scorer_for(ctx.follow_reference(config.select), bundle, teacher=ctx.teacher,
                       dataset=ctx.selection_dataset)
    data = ctx.data if needs_real_images(config) or ctx.dataset is not None else None
    return ctx.note_target(distill(bundle, ctx.learn_from, config, data=data, checkpoint_dir=ctx.work_dir,
                                   resume=ctx.resume, score=score))


@register_method("slim_student", SlimStudent)
def slim_student_step(bundle: ModelBundle, config: SlimStudent, ctx: MethodContext) -> ModelBundle:
    """A slimmer copy of the current model's generator (any class) for the next ``distill`` step."""
    return slim_student(bundle, config.width, seed=config.seed, init=config.init)

"""``distill``, ``slim_student`` and ``assistant`` as registered methods (recipe steps, ``slimgen apply``)."""

from __future__ import annotations

from dataclasses import dataclass

from slimgen.distill.api import distill
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
    data = ctx.data if ctx.dataset is not None else None  # none: distill() names the terms that need it
    return ctx.note_target(distill(bundle, ctx.learn_from, config, data=data, checkpoint_dir=ctx.work_dir,
                                   resume=ctx.resume, score=score))


@register_method("slim_student", SlimStudent)
def slim_student_step(bundle: ModelBundle, config: SlimStudent, ctx: MethodContext) -> ModelBundle:
    """A slimmer copy of the current model's generator (any class) for the next ``distill`` step."""
    return slim_student(bundle, config.width, seed=config.seed, init=config.init)


@dataclass(frozen=True)
class Assistant:
    """The model so far becomes what later training steps learn from: a teacher assistant.

    Knowledge distillation across a large capacity gap does better through an intermediate model (Mirzadeh et al.,
    2020, "Improved knowledge distillation via teacher assistant"): in a recipe, compress the teacher part of the way
    and distil (the assistant), then ``assistant: {}``, then compress further and distil again: that distillation
    imitates the assistant. Quality is still reported against the run's teacher. The model itself is unchanged.
    """


def _assistant_target(config: Assistant, ctx: MethodContext) -> None:
    if ctx.current is None:  # outside a run (slimgen apply): nothing learns after it
        return
    ctx.target = ctx.current
    ctx.target_note = "the teacher assistant (the model the steps before 'assistant' made)"


@register_method("assistant", Assistant, on_context=_assistant_target)
def assistant_step(bundle: ModelBundle, config: Assistant, ctx: MethodContext) -> ModelBundle:
    """Leave ``bundle`` as it is; the runner makes it the target of later training steps (:func:`_assistant_target`)."""
    return bundle

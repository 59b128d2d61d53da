"""``finetune`` and ``quantize_aware`` (QAT) as registered methods (recipe steps, ``slimgen apply``)."""

from __future__ import annotations

from slimgen.evaluate.selection import Selection
from slimgen.methods import MethodContext, register_method
from slimgen.models import ModelBundle
from slimgen.quantize import QuantAwareTraining, quantize
from slimgen.quantize.configs import parse_quantize_aware
from slimgen.train.finetune import FineTuning, finetune, scorer_for


@register_method("finetune", FineTuning)
def finetune_step(bundle: ModelBundle, config: FineTuning, ctx: MethodContext) -> ModelBundle:
    """Adversarial fine-tuning on the run's data; the best epoch is selected against the run's own reference
    (:meth:`MethodContext.follow_reference`) in a training feature space. Resumes from ``ctx.work_dir``."""
    score = scorer_for(ctx.follow_reference(config), bundle, teacher=ctx.teacher, dataset=ctx.selection_dataset)
    return ctx.note_target(finetune(bundle, config, data=ctx.data, teacher=ctx.learn_from, score=score,
                                    checkpoint_dir=ctx.work_dir, resume=ctx.resume))


@register_method("quantize_aware", QuantAwareTraining, parse=parse_quantize_aware)
def quantize_aware_step(bundle: ModelBundle, config: QuantAwareTraining, ctx: MethodContext) -> ModelBundle:
    """Quantization-aware fine-tuning on the run's real images; the best epoch selected against the run's
    reference in a training feature space (:class:`Selection`'s defaults)."""
    score = scorer_for(ctx.follow_reference(Selection()), bundle, teacher=ctx.teacher, dataset=ctx.selection_dataset)
    return quantize(bundle, config, data=ctx.data, score=score, checkpoint_dir=ctx.work_dir, resume=ctx.resume)

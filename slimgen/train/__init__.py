"""Training: the one trainer (objectives + hooks, :mod:`slimgen.train.trainer`) run by the one epoch loop
(:mod:`slimgen.train.loop`: seeded, checkpointed per epoch, resumable, DDP under torchrun), and its presets:
``slimgen train`` (DCGAN, VAE and classifier into model folders), fine-tuning, quantization-aware training."""

from slimgen.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from slimgen.train.loop import LoopSettings, resolve_device, run_epochs
from slimgen.train.objectives import Adversarial, Batch, CrossEntropy, EncoderTerms, Objective, Penalty, TeacherMatch
from slimgen.train.recipes import ClassifierTraining, ConditionalDCGANTraining, DCGANTraining, VAETraining, train
from slimgen.train.trainer import (
    EMA,
    Fit,
    Hook,
    KeepZeros,
    MaskSchedule,
    StepCallback,
    Trainer,
    fit,
    register_preset,
    tune,
)

__all__ = [
    "EMA",
    "Adversarial",
    "Batch",
    "ClassifierTraining",
    "ConditionalDCGANTraining",
    "CrossEntropy",
    "DCGANTraining",
    "EncoderTerms",
    "Fit",
    "Hook",
    "KeepZeros",
    "LoopSettings",
    "MaskSchedule",
    "Objective",
    "Penalty",
    "StepCallback",
    "TeacherMatch",
    "Trainer",
    "VAETraining",
    "fit",
    "has_checkpoint",
    "load_checkpoint",
    "register_preset",
    "resolve_device",
    "run_epochs",
    "save_checkpoint",
    "train",
    "tune",
]

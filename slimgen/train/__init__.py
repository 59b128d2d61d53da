"""``slimgen train``: DCGAN, VAE and classifier training into model folders, resumable per epoch."""

from slimgen.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from slimgen.train.loop import LoopSettings, resolve_device, run_epochs
from slimgen.train.recipes import ClassifierTraining, ConditionalDCGANTraining, DCGANTraining, VAETraining, train

__all__ = [
    "ClassifierTraining", "ConditionalDCGANTraining", "DCGANTraining", "LoopSettings", "VAETraining", "has_checkpoint", "load_checkpoint",
    "resolve_device", "run_epochs", "save_checkpoint", "train",
]

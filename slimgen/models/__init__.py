"""Model zoo, registry, model folders and the generative-model adapter."""

from slimgen.models.adapter import generate, generate_all, sample_latents
from slimgen.models.classifier import ImageClassifier
from slimgen.models.dcgan import DCGANDiscriminator, DCGANGenerator
from slimgen.models.folder import ModelBundle, PartSpec, import_checkpoint, load_folder, save_folder, weight_bytes
from slimgen.models.importer import import_model
from slimgen.models.inputs import GenInputs, InputSpec, calibration_inputs, inputs_of, run, set_inputs
from slimgen.models.pretrained import bundle_of, load_pretrained, module_of, save_pretrained
from slimgen.models.registry import ARCHITECTURES, build, resolve
from slimgen.models.state import CompressionState, state_of
from slimgen.models.vae import VAEDecoder, VAEEncoder
from slimgen.models.zoo import resolve_model_path, zoo_names, zoo_path

__all__ = [
    "ARCHITECTURES",
    "CompressionState",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GenInputs",
    "ImageClassifier",
    "InputSpec",
    "ModelBundle",
    "PartSpec",
    "VAEDecoder",
    "VAEEncoder",
    "build",
    "bundle_of",
    "calibration_inputs",
    "generate",
    "generate_all",
    "import_checkpoint",
    "import_model",
    "inputs_of",
    "load_folder",
    "load_pretrained",
    "module_of",
    "resolve",
    "resolve_model_path",
    "run",
    "sample_latents",
    "save_folder",
    "save_pretrained",
    "set_inputs",
    "state_of",
    "weight_bytes",
    "zoo_names",
    "zoo_path",
]

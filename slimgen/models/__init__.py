"""Model zoo, registry, model folders and the generative-model adapter."""

from slimgen.models.adapter import generate, generate_all, sample_latents
from slimgen.models.classifier import ImageClassifier
from slimgen.models.dcgan import DCGANDiscriminator, DCGANGenerator
from slimgen.models.folder import ModelBundle, PartSpec, import_checkpoint, load_folder, save_folder, weight_bytes
from slimgen.models.inputs import GenInputs, InputSpec, inputs_of, run, set_inputs
from slimgen.models.registry import ARCHITECTURES, build, resolve, trust_code
from slimgen.models.vae import VAEDecoder, VAEEncoder
from slimgen.models.zoo import resolve_model_path, zoo_names, zoo_path

__all__ = [
    "ARCHITECTURES",
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
    "generate",
    "generate_all",
    "import_checkpoint",
    "inputs_of",
    "load_folder",
    "resolve",
    "resolve_model_path",
    "run",
    "sample_latents",
    "save_folder",
    "set_inputs",
    "trust_code",
    "weight_bytes",
    "zoo_names",
    "zoo_path",
]

"""slimgen: make trained generative image models smaller and faster while keeping what they generate."""

from slimgen._env import configure_caches

configure_caches()

# The composition root: implementations register into registries of lower layers (imports point down,
# see ARCHITECTURE.md); importing them here makes them present whatever part of slimgen is imported.
from slimgen.quantize import codecs as _codecs  # noqa: E402, F401  (storage: the linear and codebook codecs)
from slimgen.train import qat as _qat  # noqa: E402, F401  (quantize(): QuantAwareTraining)

__version__ = "0.1.0"

"""slimgen: make trained generative image models smaller and faster while keeping what they generate."""

import os as _os
import sys as _sys

# ``python -m slimgen`` puts the current directory first on sys.path, so a file there named like a
# module slimgen imports (PIL/, yaml.py, onnxruntime.py, a folder's evilpkg/) would shadow it. While
# ``-m`` is locating this package, sys.argv[0] is "-m" (documented for -m): drop that entry before the
# library below is imported (--trust-code imports a user's module with the current directory searched
# last, see slimgen.models.registry).
if _sys.argv[:1] == ["-m"] and _sys.path and _sys.path[0] in ("", _os.getcwd()) and not _sys.flags.safe_path:
    del _sys.path[0]

from slimgen._env import configure_caches

configure_caches()

# The composition root: implementations register into registries of lower layers (imports point down,
# see ARCHITECTURE.md); importing them here makes them present whatever part of slimgen is imported.
from slimgen.quantize import codecs as _codecs  # noqa: E402, F401  (storage: the linear and codebook codecs)
from slimgen.train import qat as _qat  # noqa: E402, F401  (quantize(): QuantAwareTraining)

__version__ = "0.1.0"

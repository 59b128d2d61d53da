import os
import sys

# ``python -m slimgen`` puts the current directory first on sys.path, so a file there named like
# a module slimgen imports later (onnxruntime.py, yaml.py, a folder's evilpkg/) would shadow it.
# slimgen is already imported at this point; drop that entry (--trust-code imports a user's
# module with the current directory searched last, see slimgen.models.registry).
if sys.path and sys.path[0] in ("", os.getcwd()) and not sys.flags.safe_path:
    del sys.path[0]

from slimgen.cli import main

main()

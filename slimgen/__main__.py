# ``python -m slimgen``: the current directory was already dropped from sys.path by slimgen/__init__.py,
# before the library was imported (a file there named like a module slimgen imports must not shadow it).
from slimgen.cli import main

main()

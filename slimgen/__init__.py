"""slimgen: make trained generative image models smaller and faster while keeping what they generate."""

from slimgen._env import configure_caches

configure_caches()

__version__ = "0.1.0"

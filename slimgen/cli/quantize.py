"""``slimgen quantize`` commands (registered on the shared app)."""

from __future__ import annotations

from slimgen.cli.app import app  # noqa: F401

"""Bench rows as recipes: a row's steps (the library's configs) run by slimgen's one pipeline runner.

``step_of(config)`` writes a config as its recipe step (the registered method's name, the config's
settings); ``run_recipe`` runs the steps on a teacher with :func:`slimgen.pipeline.compress` into a
folder of its own: validated before any work, one model folder per step, resumable after a kill,
every step evaluated (FID in the reporting and the training space, fidelity, cost).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from slimgen.methods import load_library, method_of
from slimgen.pipeline import RunResult, compress, parse_recipe


def _plain(value: Any) -> Any:
    """Tuples as lists (YAML), recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def step_of(config: Any, **overrides: Any) -> dict[str, Any]:
    """``{method name: settings}``: ``config`` (a registered method's config) as a recipe step, ``overrides`` applied."""
    load_library()
    method = method_of(config)
    if method is None:
        raise TypeError(f"{type(config).__name__} is not the config of a registered method")
    return {method.name: _plain({**dataclasses.asdict(config), **overrides})}


def run_recipe(teacher: str, steps: list[dict[str, Any]], out: Path, *, n: int, latency: bool = False,
               overwrite: bool = False) -> RunResult:
    """Run ``steps`` on ``teacher`` as one recipe into ``out`` (a rerun resumes; ``overwrite`` starts over)."""
    text = yaml.safe_dump({"teacher": teacher, "steps": steps, "evaluate": {"n": n, "latency": latency}},
                          sort_keys=False)
    return compress(parse_recipe(text, source=str(out / "recipe.yaml")), out=out, overwrite=overwrite)


def slug(name: str) -> str:
    """A row name as a folder name."""
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")

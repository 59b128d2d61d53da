"""Recipes (YAML -> validated step configs) and resumable runs (one folder per step)."""

from slimgen.pipeline.recipe import EvaluateSettings, Recipe, load_recipe, parse_recipe
from slimgen.pipeline.runner import RunResult, compress

__all__ = ["EvaluateSettings", "Recipe", "RunResult", "compress", "load_recipe", "parse_recipe"]

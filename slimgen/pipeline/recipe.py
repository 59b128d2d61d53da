"""YAML recipes: a teacher, a list of steps (each one of the library's config dataclasses), evaluation settings.

Everything is validated before any work starts; an error names the recipe file and line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slimgen.errors import ConfigError
from slimgen.pipeline import library_steps  # noqa: F401  (registers the library's steps)
from slimgen.pipeline.steps import STEPS, StepType


@dataclass(frozen=True)
class EvaluateSettings:
    """How every step is measured: samples, latent seed, reference, latency on/off.

    ``reference``: ``auto`` (Fashion-MNIST for 1x28x28 models, else the teacher's own samples),
    ``teacher``, or a data set. ``extractor``: the reporting feature space (None: the default for
    the image shape, :func:`slimgen.evaluate.features.default_extractor`).
    """

    n: int = 10_000
    seed: int = 0
    reference: str = "auto"
    extractor: str | None = None
    latency: bool = True

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ConfigError(f"evaluate.n must be >= 2, got {self.n}")


@dataclass(frozen=True)
class Step:
    name: str
    config: Any
    line: int


@dataclass(frozen=True)
class Recipe:
    teacher: str
    steps: tuple[Step, ...]
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    dataset: str = "fashion-mnist"
    source: str = ""


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def build_dataclass(cls: type, values: Any, where: str) -> Any:
    """Construct dataclass ``cls`` from a YAML mapping, recursing into nested dataclass fields.

    Unknown keys, wrong types and the dataclass's own validation errors become ConfigError
    messages that start with ``where`` (file:line and step).
    """
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(values).__name__} {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    kwargs = {}
    for key, value in values.items():
        tp = _strip_optional(hints[key])
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            kwargs[key] = None if value is None else build_dataclass(tp, value, f"{where}, {key}")
            continue
        kwargs[key] = _check_type(value, tp, f"{where}, {key}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if origin in (list, tuple) and not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
    if origin in (list, tuple):
        return tuple(value) if origin is tuple else list(value)
    if origin is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return value


def parse_recipe(text: str, *, source: str = "<recipe>", teacher: str | None = None) -> Recipe:
    """Parse and validate a recipe; ``teacher`` overrides the recipe's own."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict) or root is None:
        raise ConfigError(f"{source}: a recipe is a mapping with 'teacher' and 'steps'")
    allowed = {"teacher", "steps", "evaluate", "dataset"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    teacher = teacher or data.get("teacher")
    if not teacher:
        raise ConfigError(f"{source}: no teacher (set 'teacher:' or pass --teacher)")
    nodes = {k.value: v for k, v in root.value}
    steps_node = nodes.get("steps")
    raw_steps = data.get("steps") or []
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{source}: 'steps' must be a non-empty list")
    steps = []
    for i, raw in enumerate(raw_steps):
        line = steps_node.value[i].start_mark.line + 1 if steps_node is not None else 0
        where = f"{source}:{line}: step {i + 1}"
        if not isinstance(raw, dict) or len(raw) != 1:
            raise ConfigError(f"{where}: each step is one mapping 'name: {{settings}}', got {raw!r}")
        (name, values), = raw.items()
        step_type: StepType | None = STEPS.get(name)
        if step_type is None:
            raise ConfigError(f"{where} ({name}): unknown step; known: {', '.join(sorted(STEPS))}")
        if step_type.replaces_teacher and i != 0:
            raise ConfigError(f"{where} ({name}): must be the first step: its model becomes the teacher that every "
                              "later step compares with")
        config = step_type.parse(values, f"{where} ({name})") if step_type.parse else build_dataclass(
            step_type.config_cls, values, f"{where} ({name})")
        steps.append(Step(name, config, line))
    ev_line = nodes["evaluate"].start_mark.line + 1 if "evaluate" in nodes else 0
    evaluate = build_dataclass(EvaluateSettings, data.get("evaluate"), f"{source}:{ev_line}: evaluate")
    dataset = data.get("dataset", "fashion-mnist")
    return Recipe(teacher=teacher, steps=tuple(steps), evaluate=evaluate, dataset=dataset, source=text)


def load_recipe(path: str | Path, *, teacher: str | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    return parse_recipe(path.read_text(encoding="utf-8"), source=str(path), teacher=teacher)

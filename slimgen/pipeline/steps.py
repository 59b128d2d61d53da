"""The registry of recipe steps: a YAML name -> (config dataclass, function applying it).

Each step function takes the current bundle, its config and the run context and returns the
new bundle; it is the same library call a Python user would make.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimgen.data import ImageSet
from slimgen.models import ModelBundle


@dataclass
class RunContext:
    """What a step may need besides its config: the teacher, data, a folder for its own checkpoints."""

    teacher: ModelBundle
    work_dir: Path
    folder: Path | None = None  # the step's output folder (exports write their files here)
    dataset: str = "fashion-mnist"
    _data: ImageSet | None = None

    @property
    def data(self) -> ImageSet:
        if self._data is None:
            from slimgen.data import load_dataset

            self._data = load_dataset(self.dataset, "train")
        return self._data


@dataclass(frozen=True)
class StepType:
    config_cls: type
    apply: Callable[[ModelBundle, Any, RunContext], ModelBundle]
    parse: Callable[[Any, str], Any] | None = None  # custom YAML -> config, for nested step settings
    replaces_teacher: bool = False  # its output becomes the teacher of every later step (so it must come first)


STEPS: dict[str, StepType] = {}


def register_step(name: str, config_cls: type, *, parse: Callable[[Any, str], Any] | None = None,
                  replaces_teacher: bool = False,
                  ) -> Callable[[Callable[[ModelBundle, Any, RunContext], ModelBundle]], Callable[..., ModelBundle]]:
    def deco(fn: Callable[[ModelBundle, Any, RunContext], ModelBundle]) -> Callable[..., ModelBundle]:
        STEPS[name] = StepType(config_cls, fn, parse, replaces_teacher)
        return fn

    return deco

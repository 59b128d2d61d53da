"""The one registry of compression methods: each is registered once with its config class and function.

A method is a frozen config dataclass (validated in ``__post_init__``) and a function
``apply(model, config, ctx) -> model`` registered with :func:`register_method`. Everything else
comes from that one registration:

- the recipe step ``NAME: {settings}`` (:mod:`slimgen.pipeline.recipe` looks names up here);
- the command line ``slimgen apply NAME MODEL --out OUT --set key=value ...`` (typed by the
  config's annotations, nested fields as ``losses.output=10``) and ``slimgen methods``;
- the step record written into config.json (:func:`step_record`);
- the validation messages (:func:`build_config`: unknown keys, wrong types, the config's own checks).

Adding a method touches its config, its function (decorated here) and its test. The library's
own methods live in their packages and are loaded by :func:`load_library`; a method registered
anywhere else (a user's module, a test) is used the same way once its module is imported.
This module sits just above ``data`` and ``models`` (it imports only those and ``errors``), below
every layer that registers methods (prune, quantize, distill, train, export) and the pipeline and
CLI that use them.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from slimgen.data import load_dataset
from slimgen.errors import ConfigError
from slimgen.models.state import record_step, state_of

#: the packages whose modules register the library's methods (imported by :func:`load_library`)
LIBRARY_MODULES = ("slimgen.prune", "slimgen.quantize", "slimgen.distill.steps", "slimgen.train.steps",
                   "slimgen.export.steps")


@dataclass
class MethodContext:
    """What a method may need besides its model and config: the teacher, real images, folders.

    ``teacher``: the model a step compares with (the run's teacher; None outside a run).
    ``dataset``: the run's data set name or path (its train split is loaded on first use of
    :attr:`data`); None: no real images (data-free methods only). ``reference``: what the run's
    quality is measured against (``teacher``, a data set, or None/``auto``); training steps select
    their best epoch against the same (:meth:`follow_reference`, :attr:`selection_dataset`). ``work_dir``: the step's own
    checkpoints (a rerun resumes from them). ``folder``: the step's output folder (exports write there).
    ``target``: what training steps learn from when an earlier step changed it (:attr:`Method.on_context`),
    None: the teacher (:attr:`learn_from`); ``target_note`` says how it was made. ``current``: the model the last
    finished step of a run left (the runner sets it before that step's ``on_context``).
    """

    teacher: Any = None
    current: Any = None
    target: Any = None
    target_note: str | None = None
    work_dir: Path | None = None
    folder: Path | None = None
    dataset: str | None = "fashion-mnist"
    reference: str | None = None
    _data: Any = None

    @property
    def learn_from(self) -> Any:
        """The model training steps imitate: :attr:`target` where a step made one, else the teacher."""
        return self.target if self.target is not None else self.teacher

    def note_target(self, model: Any) -> Any:
        """``model`` (a training step's output) with its last step recording what it learned from, where a step
        made :attr:`target`; returned."""
        if self.target_note:
            model.steps[-1]["learned_from"] = self.target_note
        return model

    @property
    def data(self) -> Any:
        """The train split of :attr:`dataset` (an ``ImageSet``), loaded once."""
        if self._data is None:
            if self.dataset is None:
                raise ConfigError("this step trains on real images: give the run a data set (a recipe's 'dataset:')")
            self._data = load_dataset(self.dataset, "train")
        return self._data

    @property
    def selection_dataset(self) -> str:
        """The data set a best-epoch selection with reference ``auto`` compares with when its images fit:
        the run's quality reference if that is a data set, else its training data set."""
        if self.reference not in (None, "teacher", "auto"):
            return str(self.reference)
        return self.dataset or "fashion-mnist"

    def follow_reference(self, config: Any) -> Any:
        """``config`` (a ``Selection``, or a config with a ``select`` field) whose ``auto`` reference follows the
        run's: the teacher's samples when the run is measured against its teacher."""
        select = getattr(config, "select", config)
        if self.reference != "teacher" or getattr(select, "reference", None) != "auto":
            return config
        select = dataclasses.replace(select, reference="teacher")
        return select if not hasattr(config, "select") else dataclasses.replace(config, select=select)

    @property
    def resume(self) -> bool:
        """Whether the step's work folder holds a checkpoint of an unfinished run of it."""
        return self.work_dir is not None and (self.work_dir / "state.json").is_file()


Apply = Callable[[Any, Any, MethodContext], Any]


@dataclass(frozen=True)
class Method:
    """One registered method: its name (recipe step and CLI), config class and function.

    ``parse``: a custom settings -> config builder (for a config that is not one flat
    dataclass); default :func:`build_config`. ``replaces_teacher``: the method's output is the
    teacher of every later step (so in a recipe it must come first). ``on_context(config, ctx)``: what
    a recipe step changes in the run besides its model (e.g. the :attr:`MethodContext.target` later
    steps learn from); the runner calls it after the step, and again for a finished step a resumed run
    skips, so both runs go on with the same context. ``needs_onnx(config)``: the step builds an ONNX graph of the model
    (an export, an int8-activation model run by ONNX Runtime), so a run checks before its first step that the teacher
    has one, instead of failing after the training.
    """

    name: str
    config_cls: type
    apply: Apply
    parse: Callable[[Any, str], Any] | None = None
    replaces_teacher: bool = False
    on_context: Callable[[Any, MethodContext], None] | None = None
    needs_onnx: Callable[[Any], bool] | None = None

    @property
    def summary(self) -> str:
        """The first line of the config class's docstring."""
        return ((self.config_cls.__doc__ or "").strip().splitlines() or [""])[0]

    def config(self, values: Any, where: str | None = None) -> Any:
        """The validated config from a settings mapping (a recipe step's, or ``--set`` pairs')."""
        where = where or self.name
        return self.parse(values, where) if self.parse else build_config(self.config_cls, values, where)


METHODS: dict[str, Method] = {}


def register_method(name: str, config_cls: type, *, parse: Callable[[Any, str], Any] | None = None,
                    replaces_teacher: bool = False,
                    on_context: Callable[[Any, MethodContext], None] | None = None,
                    needs_onnx: Callable[[Any], bool] | None = None) -> Callable[[Apply], Apply]:
    """Decorator: register ``fn(model, config, ctx) -> model`` as method ``name`` with ``config_cls``.

    Registering a name again replaces it (a module reloaded); the function is returned unchanged.
    """
    if not (dataclasses.is_dataclass(config_cls) and isinstance(config_cls, type)):
        raise TypeError(f"method {name!r}: config_cls must be a dataclass, got {config_cls!r}")

    def deco(fn: Apply) -> Apply:
        METHODS[name] = Method(name, config_cls, fn, parse, replaces_teacher, on_context, needs_onnx)
        return fn

    return deco


def load_library() -> dict[str, Method]:
    """Import the library's method modules (:data:`LIBRARY_MODULES`); returns :data:`METHODS`."""
    for module in LIBRARY_MODULES:
        importlib.import_module(module)
    return METHODS


def get_method(name: str) -> Method:
    """The registered method ``name``; a ConfigError lists the known ones."""
    if name not in METHODS:
        load_library()
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_of(config: Any) -> Method | None:
    """The registered method whose config class ``config`` is (None if none is)."""
    return next((m for m in METHODS.values() if type(config) is m.config_cls), None)


def step_record(name: str, config: Any) -> dict[str, Any]:
    """What config.json records for a finished step: ``{"step": name, "config": {settings}}``."""
    return {"step": name, "config": dataclasses.asdict(config)}


def apply_method(name: str, model: Any, config: Any, ctx: MethodContext | None = None) -> Any:
    """Run method ``name`` on ``model`` (its config, or a settings mapping validated first); returns the new model.

    When the method's function did not record a step itself, :func:`step_record` is appended
    (``with_step`` of a bundle, the module's compression state of a plain ``nn.Module``).
    """
    method = get_method(name)
    if not isinstance(config, method.config_cls):
        config = method.config(config)
    before = len(_steps(model))
    out = method.apply(model, config, ctx or MethodContext())
    if len(_steps(out)) <= before:
        _record(out, step_record(name, config))
    return out


def _steps(model: Any) -> list[dict[str, Any]]:
    return state_of(model).steps if isinstance(model, nn.Module) else list(model.steps)


def _record(model: Any, step: dict[str, Any]) -> None:
    if isinstance(model, nn.Module):
        record_step(model, step)
    else:
        model.with_step(step)


# --- settings -> config: typed by the dataclass's annotations ---------------------------------------------


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=3", "losses.output=10", "formats=[onnx]"]`` -> a nested settings mapping.

    Each value is read as one YAML scalar or flow collection (``3`` int, ``0.5`` float, ``true``,
    ``[a, b]``, ``null``), so it is typed exactly as the same value in a recipe.
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. epochs=3 or losses.output=10), got {pair!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot read the value {text!r} (write it as in a YAML recipe)") from None
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is set to a value and also has settings below it")
            node = child
        if leaf in node:
            raise ConfigError(f"--set {key} is given twice")
        node[leaf] = value
    return values


def fields_help(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, type, default)`` for every settable field of config ``cls``, nested dataclasses flattened."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            rows += fields_help(tp, f"{prefix}{f.name}.")
            continue
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        shown = " | ".join(repr(a) for a in typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else _type_name(tp)
        rows.append((f"{prefix}{f.name}", shown, repr(default)))
    return rows


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def build_config(cls: type, values: Any, where: str) -> Any:
    """Construct dataclass ``cls`` from a YAML mapping, recursing into nested dataclass fields.

    Unknown keys, wrong types and the dataclass's own validation errors become ConfigError
    messages that start with ``where`` (file:line and step).
    """
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(values).__name__} {show(values)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    kwargs = {key: _check_type(value, hints[key], f"{where}, {key}") for key, value in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except Exception as exc:  # a config's own validation meeting a value it did not expect
        raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from exc


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """``value`` (from YAML) checked against the annotation ``tp`` and converted (lists to tuples, int to float)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got "
                          f"{type(value).__name__} {show(value)}")
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {show(value)}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build_config(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {show(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {show(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected a list of {len(args)} values, got {show(value)}")
            return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {show(value)}")
        return value
    return value



"""YAML recipes: a teacher, a list of steps (each one of the library's config dataclasses), evaluation settings.

Everything is validated before any work starts; an error names the recipe file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slimgen.errors import ConfigError
from slimgen.methods import Method, build_config, get_method, load_library
from slimgen.methods import show as _show


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
    dataset: str | None = None  # None: the evaluation reference's data set (Fashion-MNIST for 1x28x28), else none
    source: str = ""

    def step(self, index: int) -> Method:
        """The registered method of step ``index`` (0-based)."""
        return get_method(self.steps[index].name)


def geometric(final: float, round: int, rounds: int) -> float:
    """Round ``round`` (1-based) of ``rounds`` equal geometric steps to the fraction ``final``: 1 - (1 - final)^(round / rounds).

    A recipe writes it as ``sparsity: {geometric: {final: 0.9, round: 1, rounds: 4}}``; it is the target
    :func:`slimgen.prune.prune_iteratively` gives its rounds.
    """
    from slimgen.prune.schedules import geometric_targets

    return geometric_targets(final, rounds)[round - 1]


#: computed values a recipe may write in place of a number: name -> (function, its settings)
COMPUTED = {"geometric": (geometric, ("final", "round", "rounds"))}


def computed_values(values: Any, where: str) -> Any:
    """``values`` with every ``{NAME: {settings}}`` of :data:`COMPUTED` replaced by its number (recursively)."""
    if isinstance(values, list):
        return [computed_values(v, where) for v in values]
    if not isinstance(values, dict):
        return values
    if len(values) == 1 and next(iter(values)) in COMPUTED:
        (name, settings), = values.items()
        fn, keys = COMPUTED[name]
        if not isinstance(settings, dict) or sorted(settings) != sorted(keys):
            raise ConfigError(f"{where}: {name} takes {{{', '.join(keys)}}}, got {_show(settings)}")
        final, index, count = settings["final"], settings["round"], settings["rounds"]
        if not (isinstance(final, float) and 0 < final < 1):
            raise ConfigError(f"{where}: {name} final must be a fraction in (0, 1), got {_show(final)}")
        if not (isinstance(count, int) and isinstance(index, int) and 1 <= index <= count):
            raise ConfigError(f"{where}: {name} needs integers 1 <= round <= rounds, got round {index!r} of {count!r}")
        return fn(**settings)
    return {k: computed_values(v, f"{where}, {k}") for k, v in values.items()}


#: Limits checked before a recipe is parsed into Python objects (a recipe is untrusted input).
MAX_RECIPE_BYTES = 256 * 1024
MAX_DEPTH = 16  # nested mappings/lists, counted through aliases
MAX_ALIASES = 64
MAX_NODES = 20_000  # scalars, mappings and lists after alias expansion


def _yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    """One line: ``file:line:col: problem (context)``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{problem} ({context})" if context else problem
    return ConfigError(f"{where}: not valid YAML: {' '.join(str(text).split())}")


def _check_events(text: str, source: str) -> None:
    """Stream the YAML events (no objects built): refuse deep nesting and many aliases before composing."""
    depth = aliases = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                m = event.start_mark
                raise ConfigError(f"{source}:{m.line + 1}:{m.column + 1}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                m = event.start_mark
                raise ConfigError(f"{source}:{m.line + 1}:{m.column + 1}: more than {MAX_ALIASES} YAML aliases (*name)")


_STR_TAG, _MERGE_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"


def _check_nodes(root: yaml.Node, source: str) -> None:
    """Walk the composed node graph as the loaded data will be (aliases expanded): bound its size and
    depth, and require string keys without duplicates."""
    count = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        where = f"{source}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
        if count > MAX_NODES:
            raise ConfigError(f"{where}: the recipe expands to more than {MAX_NODES:,} values (YAML aliases?)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels (a recursive YAML alias?)")
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    stack.append((value, depth + 1))
                    continue
                kw = f"{source}:{key.start_mark.line + 1}:{key.start_mark.column + 1}"
                if not isinstance(key, yaml.ScalarNode) or key.tag != _STR_TAG:
                    shown = key.value if isinstance(key, yaml.ScalarNode) else "a mapping or list"
                    raise ConfigError(f"{kw}: key {_show(shown)} is not a string; recipe keys are names")
                if key.value in seen:
                    raise ConfigError(f"{kw}: key {key.value!r} appears twice in the same mapping")
                seen.add(key.value)
                stack.append((value, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, depth + 1) for v in node.value)


def _load_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Compose and load ``text`` safely: limits first, then objects; YAML errors in one line."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{source}: recipe larger than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a short settings file")
    try:
        _check_events(text, source)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_nodes(root, source)
        data = yaml.load(text, Loader=yaml.SafeLoader)  # SafeLoader: plain data only
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from exc
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a timestamp out of range
        raise ConfigError(f"{source}: invalid YAML value: {' '.join(str(exc).split())}") from exc
    return root, data


def parse_recipe(text: str, *, source: str = "<recipe>", teacher: str | None = None) -> Recipe:
    """Parse and validate a recipe; ``teacher`` overrides the recipe's own."""
    root, data = _load_yaml(text, source)
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{source}: a recipe is a mapping with 'teacher' and 'steps'")
    nodes = {k.value: v for k, v in root.value}

    def line_of(key: str) -> str:
        return f"{source}:{nodes[key].start_mark.line + 1}" if key in nodes else source

    allowed = {"teacher", "steps", "evaluate", "dataset"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{line_of(unknown[0])}: unknown top-level key {unknown[0]!r}; allowed: "
                          f"{', '.join(sorted(allowed))}")
    for key in ("teacher", "dataset"):
        if key in data and not (isinstance(data[key], str) and data[key]):
            raise ConfigError(f"{line_of(key)}: {key} must be a non-empty string (a model folder, zoo:NAME or a "
                              f"dataset name/path), got {_show(data[key])}")
    teacher = teacher or data.get("teacher")
    if not teacher:
        raise ConfigError(f"{source}: no teacher (set 'teacher:' or pass --teacher)")
    steps_node = nodes.get("steps")
    raw_steps = data.get("steps") or []
    if not isinstance(raw_steps, list) or not raw_steps or not isinstance(steps_node, yaml.SequenceNode):
        raise ConfigError(f"{line_of('steps')}: 'steps' must be a non-empty list")
    steps = []
    for i, raw in enumerate(raw_steps):
        line = steps_node.value[i].start_mark.line + 1
        where = f"{source}:{line}: step {i + 1}"
        if not isinstance(raw, dict) or len(raw) != 1:
            raise ConfigError(f"{where}: each step is one mapping 'name: {{settings}}', got {_show(raw)}")
        (name, values), = raw.items()
        methods = load_library()
        method: Method | None = methods.get(name)
        if method is None:
            raise ConfigError(f"{where} ({name}): unknown step; known: {', '.join(sorted(methods))}")
        if method.replaces_teacher and i != 0:
            raise ConfigError(f"{where} ({name}): must be the first step: its model becomes the teacher that every "
                              "later step compares with")
        config = method.config(computed_values(values, f"{where} ({name})"), f"{where} ({name})")
        steps.append(Step(name, config, line))
    evaluate = build_config(EvaluateSettings, data.get("evaluate"), f"{line_of('evaluate')}: evaluate")
    dataset = data.get("dataset")
    return Recipe(teacher=teacher, steps=tuple(steps), evaluate=evaluate, dataset=dataset, source=text)


def shipped_recipe(name: str) -> Path:
    """The file of the recipe ``name`` shipped in the package (``slimgen/recipes/NAME.yaml``, package data)."""
    from importlib.resources import files

    folder = files("slimgen.recipes")
    known = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    if name not in known:
        raise ConfigError(f"no shipped recipe {name!r}; shipped: {', '.join(known)}")
    return Path(str(folder / f"{name}.yaml"))


def load_recipe(path: str | Path, *, teacher: str | None = None) -> Recipe:
    """Read and validate the recipe file ``path`` (UTF-8, at most :data:`MAX_RECIPE_BYTES`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found" if not path.exists() else f"{path}: not a file")
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise ConfigError(f"{path}: recipe is {size:,} bytes; at most {MAX_RECIPE_BYTES:,} allowed "
                              "(a recipe is a short settings file)")
        raw = path.read_bytes()[:MAX_RECIPE_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"{path}:{line}:{col}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the recipe "
                          "as UTF-8") from exc
    return parse_recipe(text, source=str(path), teacher=teacher)

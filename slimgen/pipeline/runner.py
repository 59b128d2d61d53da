"""``compress``: run a recipe's steps, one model folder per finished step, resumable after a kill."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from slimgen.errors import ConfigError, OutputError
from slimgen.evaluate.api import resolve_reference
from slimgen.export.onnx import ONNX_NAME, export_fp32
from slimgen.io import check_out_folder, prepare_parent, read_json, write_json, write_text
from slimgen.methods import Method, MethodContext, apply_method, get_method
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.models.folder import copy_folder
from slimgen.pipeline.recipe import Recipe

SUMMARY, RECIPE_COPY, DONE = "summary.json", "recipe.yaml", "metrics.json"


@dataclass(frozen=True)
class RunResult:
    out: Path
    rows: list[dict[str, Any]]
    final: Path


def step_dir(out: Path, index: int, name: str) -> Path:
    return out / f"{index:02d}-{name}"


def holds_step(folder: Path, config: Any, **fields: Any) -> bool:
    """Whether the model folder ``folder`` already holds this step: its last recorded step has ``config``'s
    settings (compared as config.json stores them) and ``fields`` (e.g. ``part="generator"``)."""
    if not (folder / "config.json").is_file():
        return False
    last = (read_json(folder / "config.json").get("steps") or [{}])[-1]
    stored = json.loads(json.dumps(dataclasses.asdict(config)))
    return last.get("config") == stored and all(last.get(k) == v for k, v in fields.items())


def _is_done(folder: Path) -> bool:
    """A step folder is complete once it has its metrics: it is renamed into place only then."""
    return (folder / "config.json").is_file() and (folder / DONE).is_file()


def _check_same_recipe(out: Path, recipe: Recipe) -> None:
    stored = out / RECIPE_COPY
    if stored.is_file() and stored.read_text(encoding="utf-8") != recipe.source:
        raise ConfigError(
            f"{out} holds a run of a different recipe ({stored}); use a new --out folder or delete it to start over"
        )
    write_text(stored, recipe.source)


def _evaluate_row(bundle: ModelBundle, teacher: ModelBundle | None, recipe: Recipe, name: str) -> dict[str, Any]:
    """Quality and cost of one step; its latency is left to :func:`time_steps` (one interleaved run at the end)."""
    from slimgen.evaluate import evaluate

    ev = recipe.evaluate
    result = evaluate(bundle, teacher=teacher, reference=ev.reference, n=ev.n, seed=ev.seed, latency=False,
                      extractor=ev.extractor, write=False)  # the runner writes the row itself (never into the teacher's own folder)
    return {"step": name, **result.to_dict()}


def time_steps(out: Path, rows: list[dict[str, Any]], *, rounds: int = 3, repeats: int = 10) -> list[dict[str, Any]]:
    """Time every step's model (as it runs: its int8 graph for int8 activations) and its exported model.onnx
    together with the teacher, in one interleaved run; returns the rows with their latencies and the run's settings."""
    from slimgen.runtime import engine_for
    from slimgen.runtime.bench import interleaved_latency

    models, onnx, what = {}, {}, {}
    for row in rows:
        folder = out / row["step"]
        if not (folder / "config.json").is_file():
            continue
        bundle = load_folder(folder)
        if bundle.inputs is None:
            continue
        engine = engine_for(bundle.generator, bundle.meta)
        models[row["step"]], what[row["step"]] = engine, engine.describe()
        if (folder / ONNX_NAME).is_file():
            onnx[row["step"]] = str(folder / ONNX_NAME)
    run = interleaved_latency(models, onnx=onnx, rounds=rounds, repeats=repeats)
    timed = []
    for row in rows:
        ms = run.ms.get(row["step"], {})
        timed.append({**row, "latency_ms_b1": ms.get("b1"), "latency_ms_b64": ms.get("b64"),
                      "onnx_latency_ms_b1": ms.get("onnx_b1"), "onnx_latency_ms_b64": ms.get("onnx_b64"),
                      "latency_runtime": what.get(row["step"]), "threads": run.threads, "latency_run": run.describe()})
    return timed


def _onnx_quality(bundle: ModelBundle, onnx: Path, teacher: ModelBundle | None, recipe: Recipe) -> dict[str, Any]:
    """FID, KID and PSNR of the exported ONNX model itself (the int8 one where int8 was exported: what
    runs), on the same latents as the folder's own row."""
    from slimgen.evaluate import evaluate
    from slimgen.runtime.engines import onnx_engine

    ev = recipe.evaluate
    engine = onnx_engine(onnx, bundle.inputs, threads=None) if bundle.inputs is not None else None
    exported = dataclasses.replace(bundle, parts={**bundle.parts, "generator": engine}, path=None)
    r = evaluate(exported, teacher=teacher, reference=ev.reference, n=ev.n, seed=ev.seed, latency=False, write=False,
                 extractor=ev.extractor)
    return {"onnx_fid": r.fid, "onnx_train_fid": r.train_fid, "onnx_kid_mean": r.kid_mean, "onnx_kid_std": r.kid_std,
            "onnx_psnr": "inf" if r.psnr is not None and math.isinf(r.psnr) else r.psnr}


def _run_step(index: int, step: Any, bundle: ModelBundle, ctx: MethodContext, out: Path, recipe: Recipe
              ) -> tuple[dict[str, Any], ModelBundle]:
    """Apply one step into a temporary folder, evaluate it there, then rename it into place.

    Returns the step's summary row and its model as loaded back from the folder (what the next
    step starts from, so a resumed run and an uninterrupted one see the same model).
    """
    final = step_dir(out, index, step.name)
    tmp = out / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    ctx.work_dir, ctx.folder = out / ".work" / final.name, tmp
    method = get_method(step.name)
    new = apply_method(step.name, bundle.copy(), step.config, ctx)
    seconds = time.perf_counter() - t0
    new.steps[-1] = {**new.steps[-1], "recipe_step": step.name, "recipe_line": step.line, "seconds": round(seconds, 1)}
    exported = [p.name for p in tmp.iterdir()]  # the step's own files (exports)
    save_folder(new, tmp, card=_card(step.name, step.config, seconds, step.line), keep=exported)
    saved = load_folder(tmp)
    if method.replaces_teacher:  # e.g. a rotated latent basis: comparing it with the old teacher is moot
        ctx.teacher = saved
    if method.on_context is not None:  # e.g. the teacher later steps learn from, factorized like the student
        ctx.current = saved
        method.on_context(step.config, ctx)
    row = _evaluate_row(saved, ctx.teacher, recipe, final.name)
    if (tmp / ONNX_NAME).is_file():
        row.update(_onnx_quality(saved, tmp / ONNX_NAME, ctx.teacher, recipe))
    row["step_seconds"] = round(seconds, 1)
    write_json(tmp / DONE, row)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    saved.path = final
    return row, saved


def _card(name: str, config: Any, seconds: float, line: int | None = None) -> str:
    where = f"- recipe line: {line}\n" if line is not None else ""
    return f"# {name}\n\n- settings: `{dataclasses.asdict(config)}`\n{where}- time: {seconds:.1f} s\n"


def _prepare_out(out: Path, *, overwrite: bool) -> None:
    """A run folder: new, empty, or a run of the same recipe (resumed); anything else needs ``overwrite``.

    ``overwrite`` moves the old folder aside in one rename and deletes it: the run starts over.
    """
    from slimgen.models.zoo import is_shipped

    if is_shipped(out):
        raise OutputError(f"{out}: is inside the shipped zoo; slimgen never writes into the installed package")
    check_out_folder(out, overwrite=True)  # a file, or a parent that is a file
    if out.is_dir() and any(out.iterdir()):
        if overwrite:
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, aside / "old")
            shutil.rmtree(aside, ignore_errors=True)
        elif not (out / RECIPE_COPY).is_file():
            raise OutputError(f"{out}: folder exists and is not a slimgen run (no {RECIPE_COPY}); pass --overwrite "
                              "to replace it whole, or choose another --out")
    prepare_parent(out / RECIPE_COPY)


def run_context(recipe: Recipe, teacher: ModelBundle, out: Path) -> MethodContext:
    """What the steps of ``recipe`` share: its teacher, its data set and the reference its quality is measured
    against (training steps select their best epoch against the same, as the CLI does with ``--dataset``).

    Without ``dataset:`` the data set is the evaluation reference's when that is one (``auto``: Fashion-MNIST
    for 1x28x28 models); a run measured against its teacher's samples has none (data-free steps only).
    """
    from slimgen.evaluate.api import resolve_reference

    reference = resolve_reference(recipe.evaluate.reference, teacher.image_shape, has_teacher=True)
    dataset = recipe.dataset if recipe.dataset is not None else reference if reference != "teacher" else None
    return MethodContext(teacher=teacher, work_dir=out / ".work", dataset=dataset, reference=reference)


def apply_to_folder(method: Method, config: Any, bundle: ModelBundle, out: Path, *, teacher: ModelBundle | None = None,
                    dataset: str | None = None) -> Path:
    """Apply one registered method to ``bundle`` and write the model folder ``out`` (``slimgen apply``).

    The step runs as in a recipe: ``teacher`` (default: ``bundle`` itself) is what it compares with, real
    images come from ``dataset`` (default: the reference's data set, Fashion-MNIST for 1x28x28 models),
    checkpoints go to ``out/checkpoint`` (resumed when there), files it exports stay in ``out``.
    """
    from slimgen.evaluate.api import resolve_reference

    teacher = teacher or bundle
    reference = dataset or resolve_reference("auto", teacher.image_shape, has_teacher=True)
    ctx = MethodContext(teacher=teacher, work_dir=out / "checkpoint", folder=out, reference=reference,
                        dataset=dataset or (reference if reference != "teacher" else None))
    out.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in out.iterdir()}
    t0 = time.perf_counter()
    new = apply_method(method.name, bundle.copy(), config, ctx)
    seconds = time.perf_counter() - t0
    exported = [p.name for p in out.iterdir() if p.name not in before]
    save_folder(new, out, card=_card(method.name, config, seconds), keep=[*exported, "checkpoint"])
    return out


def _check_onnx(recipe: Recipe, teacher: ModelBundle) -> None:
    """Where a step builds an ONNX graph (:attr:`Method.needs_onnx`), the teacher's generator must have one: a model
    ONNX cannot express (a StyleGAN2 conv grouped by the batch) stops the run before its first step, not after the
    training. Checked on the teacher, whose operations the steps keep."""
    needs = [(i, s.name) for i, s in enumerate(recipe.steps, start=1)
             if (m := get_method(s.name)).needs_onnx is not None and m.needs_onnx(s.config)]
    if not needs or teacher.inputs is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            export_fp32(teacher.generator, Path(tmp) / ONNX_NAME, teacher.inputs)
        except ConfigError as exc:
            i, name = needs[0]
            raise ConfigError(f"recipe step {i} ({name}) needs an ONNX graph of the model, and {exc}; nothing was "
                              "run (leave out int8 activations and ONNX exports for this model)") from exc


def compress(recipe: Recipe, *, out: str | Path, overwrite: bool = False) -> RunResult:
    """Run ``recipe`` into ``out``; a rerun skips finished steps and continues after the last one.

    ``out`` must be new, empty or a run of the same recipe; ``overwrite`` deletes any other
    folder there and starts over. Each step folder appears whole (temporary sibling + rename).
    """
    out = Path(out)
    teacher = load_folder(recipe.teacher)  # a bad teacher fails before anything is written
    if overwrite or not any(_is_done(step_dir(out, i, s.name)) for i, s in enumerate(recipe.steps, start=1)):
        _check_onnx(recipe, teacher)
    _prepare_out(out, overwrite=overwrite)
    _check_same_recipe(out, recipe)
    ctx = run_context(recipe, teacher, out)
    teacher_metrics = out / "00-teacher" / DONE
    if not teacher_metrics.is_file():
        # against its own samples (other latents) where that is the reference: named, or auto for a shape no shipped
        # data set holds (a user's 3x32x32 teacher has no data row to be scored against)
        kind = resolve_reference(recipe.evaluate.reference, teacher.image_shape, has_teacher=True)
        own = teacher if kind == "teacher" else None
        row = _evaluate_row(teacher, own, recipe, "00-teacher")
        save_folder(teacher, out / "00-teacher", files={DONE: row})
    rows = [read_json(teacher_metrics)]
    bundle = teacher
    for i, step in enumerate(tqdm(recipe.steps, desc="compress", unit="step"), start=1):
        folder = step_dir(out, i, step.name)
        if _is_done(folder):
            tqdm.write(f"step {i} ({step.name}): already done, loading {folder}")
            bundle = load_folder(folder)
            method = get_method(step.name)
            if method.replaces_teacher:
                ctx.teacher = bundle
            if method.on_context is not None:  # the context the finished step left, made again
                ctx.current = bundle
                method.on_context(step.config, ctx)
            rows.append(read_json(folder / DONE))
            continue
        row, bundle = _run_step(i, step, bundle, ctx, out, recipe)
        rows.append(row)
        fid = f", FID {row['fid']:.3f}" if isinstance(row.get("fid"), float) else ""
        tqdm.write(f"step {i}/{len(recipe.steps)} ({step.name}): done in {row['step_seconds']} s{fid}")
        write_json(out / SUMMARY, rows)
    if recipe.evaluate.latency:
        tqdm.write("timing every step's model and the teacher in one interleaved run")
        rows = time_steps(out, rows)
    last = step_dir(out, len(recipe.steps), recipe.steps[-1].name)
    copy_folder(last, out / "final")
    write_json(out / SUMMARY, rows)
    from slimgen.report import write_report

    write_report(out)
    return RunResult(out=out, rows=rows, final=out / "final")

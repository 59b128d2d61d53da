"""Recipes and the compress pipeline: validation before work, resume after a kill, the report."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from slimgen.errors import ConfigError
from slimgen.methods import METHODS, Method, load_library
from slimgen.models import InputSpec, ModelBundle, load_folder, save_folder
from slimgen.pipeline import compress, load_recipe, parse_recipe
from tests.conftest import needs_fmnist

GOOD = """teacher: zoo:dcgan-fmnist
steps:
  - prune_channels: {ratio: 0.75, importance: taylor}
  - finetune: {epochs: 1, steps_per_epoch: 10, teacher_weight: 1.0}
  - distill: {epochs: 1, losses: {output: 1.0, feature: 1.0, adversarial: 0.1}}
  - quantize: {weights: {method: linear, bits: 8, per_channel: true}, activations: {bits: 8, calibration: 64}}
  - export: {formats: [onnx], int8: true}
evaluate: {n: 2000}
"""


def test_good_recipe_parses_into_library_configs() -> None:
    from slimgen.prune import ChannelPruning
    from slimgen.quantize import LinearQuant

    recipe = parse_recipe(GOOD, source="r.yaml")
    assert [s.name for s in recipe.steps] == ["prune_channels", "finetune", "distill", "quantize", "export"]
    assert recipe.steps[0].config == ChannelPruning(ratio=0.75, importance="taylor")
    assert recipe.steps[2].config.losses.feature == 1.0
    assert recipe.steps[3].config.weights == LinearQuant(bits=8, per_channel=True)
    assert [s.line for s in recipe.steps] == [3, 4, 5, 6, 7]
    assert recipe.evaluate.n == 2000


@pytest.mark.parametrize("step,message", [
    ("prune_channels: {ratio: 1.5}", r"r\.yaml:4: step 2 \(prune_channels\): ratio must be in the open interval \(0, 1\), got 1\.5"),
    ("prune_chanels: {ratio: 0.5}", r"r\.yaml:4: step 2 \(prune_chanels\): unknown step; known: .*prune_channels"),
    ("finetune: {epochs: two}", r"r\.yaml:4: step 2 \(finetune\), epochs: expected int, got str 'two'"),
    ("finetune: {epoch: 2}", r"r\.yaml:4: step 2 \(finetune\): unknown key 'epoch'; allowed: .*epochs"),
    ("quantize: {weights: {method: linear, bits: 9}}", r"r\.yaml:4: step 2 \(quantize\), weights: .*bits must be one of"),
    ("quantize: {weights: {layer_bits: {net.0: 1}}}", r"step 2 \(quantize\), weights: .*layer_bits\['net\.0'\] must be one of"),
    ("quantize_aware: {weights: {method: naive}}", r"step 2 \(quantize_aware\), weights: method must be one of linear, kmeans,"),
    ("quantize_aware: {weights: int4}", r"step 2 \(quantize_aware\), weights: expected a mapping"),
    ("quantize_aware: {epochs: 0}", r"step 2 \(quantize_aware\): .*epochs must be a positive integer"),
    ("quantize: {weights: {method: lloyd}}", r"method must be one of linear, kmeans, naive"),
    ("export: {formats: [tflite]}", r"formats must be a non-empty list of onnx, torchscript"),
])
def test_invalid_steps_fail_before_work_naming_the_line(step: str, message: str) -> None:
    text = f"teacher: zoo:dcgan-fmnist\nsteps:\n  - finetune: {{epochs: 1}}\n  - {step}\n"
    with pytest.raises(ConfigError, match=message):
        parse_recipe(text, source="r.yaml")


def test_quantize_steps_read_weight_schemes_and_mixed_precision() -> None:
    from slimgen.quantize import KMeansQuant, LinearQuant, QuantAwareTraining

    text = ("teacher: zoo:dcgan-fmnist\nsteps:\n"
            "  - quantize_aware: {weights: {method: linear, bits: 8, layer_bits: {net.0: 4}}, epochs: 2, teacher_weight: 10}\n"
            "  - quantize_aware: {weights: {method: kmeans, bits: 3}}\n"
            "  - quantize_aware: {epochs: 1}\n"
            "  - quantize: {weights: {bits: 8, layer_bits: {net.0: 5}, entropy_coding: lzma}}\n")
    steps = [s.config for s in parse_recipe(text, source="r.yaml").steps]
    assert steps[0] == QuantAwareTraining(weights=LinearQuant(bits=8, layer_bits={"net.0": 4}), epochs=2, teacher_weight=10)
    assert steps[1].weights == KMeansQuant(bits=3)
    assert steps[2] == QuantAwareTraining(epochs=1)  # default weights: linear int4
    assert steps[3].weights == LinearQuant(bits=8, layer_bits={"net.0": 5}, entropy_coding="lzma")


def test_recipe_structure_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_recipe("steps: [", source="r.yaml")
    with pytest.raises(ConfigError, match="no teacher"):
        parse_recipe("steps:\n  - finetune: {}\n", source="r.yaml")
    with pytest.raises(ConfigError, match="unknown top-level key 'stpes'"):
        parse_recipe("teacher: zoo:x\nstpes: []\n", source="r.yaml")
    with pytest.raises(ConfigError, match="'steps' must be a non-empty list"):
        parse_recipe("teacher: zoo:x\nsteps: []\n", source="r.yaml")


def test_shipped_recipes_are_valid() -> None:
    for path in sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml")):
        load_recipe(path)


TINY = """teacher: {teacher}
steps:
  - prune_magnitude: {{sparsity: 0.5}}
  - prune_channels: {{ratio: 0.5}}
evaluate: {{n: 64, latency: false}}
"""


def _kill_at(monkeypatch: pytest.MonkeyPatch, name: str) -> Method:
    """Make recipe step ``name`` raise KeyboardInterrupt (what Ctrl-C does); returns the real step to restore."""
    real = load_library()[name]

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(METHODS, name, dataclasses.replace(real, apply=killed))
    return real


@needs_fmnist
def test_compress_resumes_after_a_kill_and_reports_every_step(tiny_gan: ModelBundle, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    recipe = parse_recipe(TINY.format(teacher=teacher), source="tiny.yaml")
    out = tmp_path / "run"
    real = _kill_at(monkeypatch, "prune_channels")  # Ctrl-C in the middle of step 2
    with pytest.raises(KeyboardInterrupt):
        compress(recipe, out=out)
    first = out / "01-prune_magnitude"
    assert (first / "metrics.json").is_file()
    assert not (out / "02-prune_channels").exists()
    stamp = (first / "model.safetensors").stat().st_mtime_ns

    monkeypatch.setitem(METHODS, "prune_channels", real)
    result = compress(recipe, out=out)
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # finished step not redone
    assert [r["step"] for r in result.rows] == ["00-teacher", "01-prune_magnitude", "02-prune_channels"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary[2]["macs"] < summary[0]["macs"]
    final = load_folder(out / "final")
    assert [(s["step"], s["recipe_step"]) for s in final.steps] == [("prune", "prune_magnitude"), ("prune", "prune_channels")]
    html = (out / "report.html").read_text()
    for name in ("00-teacher", "01-prune_magnitude", "02-prune_channels"):
        assert html.count(name) >= 2  # a table row and a sample grid
    # FID vs MACs and vs stored bytes (latency is off in this recipe, so no latency plot) + 3 sample grids
    assert html.count("data:image/png;base64,") == 2 + 3

    other = parse_recipe(TINY.format(teacher=teacher).replace("0.5}", "0.25}", 1), source="other.yaml")
    with pytest.raises(ConfigError, match="holds a run of a different recipe"):
        compress(other, out=out)


EXPORT = """
teacher: {teacher}
steps:
  - quantize: {{weights: {{method: linear, bits: 8}}, activations: {{calibration: 16, entropy_coding: lzma}}}}
  - export: {{formats: [onnx], int8: true, calibration: 16}}
evaluate: {{n: 64, latency: true}}
"""


@needs_fmnist
def test_export_row_measures_the_exported_int8_model_itself(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    result = compress(parse_recipe(EXPORT.format(teacher=teacher), source="export.yaml"), out=tmp_path / "run")
    quantized, exported = result.rows[1], result.rows[2]
    assert "onnx_fid" not in quantized
    # the int8-activation folder is evaluated on its int8 graph, so its row and its exported ONNX agree closely
    assert "int8" in quantized["runtime"] and "int8" in exported["runtime"]
    assert math.isfinite(exported["onnx_fid"]) and exported["onnx_fid"] == pytest.approx(exported["fid"], rel=0.1)
    assert math.isfinite(exported["onnx_psnr"]) and math.isfinite(exported["onnx_kid_mean"])
    # every latency comes from one interleaved run at the end, teacher included, threads stated
    runs = {r["latency_run"] for r in result.rows}
    assert len(runs) == 1 and "one interleaved run" in runs.pop()
    assert all(r["latency_ms_b64"] > 0 and r["threads"] == 2 for r in result.rows)
    assert exported["onnx_latency_ms_b64"] > 0 and "int8" in quantized["latency_runtime"]


ROTATED = """teacher: {teacher}
steps:
  - rotate_latent: {{steps: 100}}
  - prune_magnitude: {{sparsity: 0.5}}
  - distill: {{epochs: 1, steps_per_epoch: 2, batch_size: 8}}
evaluate: {{n: 64, latency: false}}
"""


def test_rotate_latent_must_be_the_first_step() -> None:
    text = "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\n  - rotate_latent: {}\n"
    with pytest.raises(ConfigError, match=r"r\.yaml:4: step 2 \(rotate_latent\): must be the first step"):
        parse_recipe(text, source="r.yaml")


@needs_fmnist
def test_a_rotated_teacher_stays_the_teacher_after_a_resume(tiny_gan: ModelBundle, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Later steps distil from and compare with the rotated model, also when the run resumes after the rotation."""
    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    recipe = parse_recipe(ROTATED.format(teacher=teacher), source="rotated.yaml")
    out = tmp_path / "run"
    real = _kill_at(monkeypatch, "distill")
    with pytest.raises(KeyboardInterrupt):
        compress(recipe, out=out)
    monkeypatch.setitem(METHODS, "distill", real)
    result = compress(recipe, out=out)  # without the rotated teacher, distill would raise "rotated differently"
    assert [r["step"] for r in result.rows] == ["00-teacher", "01-rotate_latent", "02-prune_magnitude", "03-distill"]
    assert [s["step"] for s in load_folder(out / "final").steps] == ["rotate_latent", "prune", "distill"]
    rows = json.loads((out / "summary.json").read_text())
    assert rows[1]["psnr"] == "inf"  # the rotated model is its own reference
    assert math.isfinite(rows[2]["psnr"]) and rows[2]["psnr"] > 10  # the pruned one, against the rotated model


def _distilled_from_after_a_resume(recipe_text: str, kill: str, out: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> list[ModelBundle]:
    """Run the recipe into ``out``, killed at its first ``kill`` step, then resumed to the end; returns the teachers its
    distillation steps learned from, in order (a step finished before the kill is not run again: each appears once)."""
    from slimgen.distill import steps as distill_steps

    recipe = parse_recipe(recipe_text, source="recipe.yaml")
    learned_from: list[ModelBundle] = []
    real_distill = distill_steps.distill

    def spy(student: ModelBundle, teacher: ModelBundle, *args: object, **kwargs: object) -> ModelBundle:
        learned_from.append(teacher)
        return real_distill(student, teacher, *args, **kwargs)

    monkeypatch.setattr(distill_steps, "distill", spy)
    real = _kill_at(monkeypatch, kill)
    with pytest.raises(KeyboardInterrupt):
        compress(recipe, out=out)
    monkeypatch.setitem(METHODS, kill, real)
    compress(recipe, out=out)
    return learned_from


FACTORIZED_TARGET = """teacher: {teacher}
steps:
  - prune_lowrank: {{rank: 2, layers: [<first>], teacher: true}}
  - distill: {{epochs: 1, steps_per_epoch: 2, batch_size: 8, losses: {{adversarial: 0}}}}
evaluate: {{n: 64, latency: false}}
"""


@needs_fmnist
def test_a_lowrank_step_with_teacher_true_gives_later_steps_a_factorized_teacher(
        tiny_gan: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prune_lowrank: {teacher: true}``: the distillation after it learns from the teacher factorized the same way
    (also after a resume that skips the finished step), while quality is still reported against the teacher."""
    from slimgen.models.factorized import LowRank

    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    out = tmp_path / "run"
    # killed at the distillation, after the low-rank step: the resumed run must make the target again
    (target,) = _distilled_from_after_a_resume(FACTORIZED_TARGET.format(teacher=teacher), "distill", out, monkeypatch)
    layer = target.generator.get_submodule("net.0")
    assert isinstance(layer, LowRank) and layer[0].out_channels == 2  # the teacher, factorized at rank 2
    assert not isinstance(tiny_gan.generator.get_submodule("net.0"), LowRank)
    final = load_folder(out / "final")
    assert "rank 2: net.0" in final.steps[-1]["learned_from"]
    rows = json.loads((out / "summary.json").read_text())
    assert math.isfinite(rows[1]["psnr"])  # the factorized student, compared with the run's own teacher
    with pytest.raises(ConfigError, match="teacher: expected bool, got int 1"):
        parse_recipe(FACTORIZED_TARGET.format(teacher=teacher).replace("teacher: true", "teacher: 1"), source="t.yaml")


ASSISTED = """teacher: {teacher}
steps:
  - prune_channels: {{ratio: 0.25}}
  - distill: {{epochs: 1, steps_per_epoch: 2, batch_size: 8, losses: {{adversarial: 0}}}}
  - assistant: {{}}
  - prune_magnitude: {{sparsity: 0.5}}
  - distill: {{epochs: 1, steps_per_epoch: 2, batch_size: 8, losses: {{adversarial: 0}}}}
evaluate: {{n: 64, latency: false}}
"""


@needs_fmnist
def test_an_assistant_step_makes_the_model_so_far_what_later_distillation_imitates(
        tiny_gan: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``assistant: {}`` (teacher-assistant distillation): the first distillation learns from the run's teacher, the
    one after the assistant step from the model the steps before it made (the 25%-pruned, distilled one), also after
    a resume that skips the assistant step; quality is still reported against the run's teacher."""
    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    out = tmp_path / "run"
    # killed after the assistant step: the resumed run must make the target again
    first, second = _distilled_from_after_a_resume(ASSISTED.format(teacher=teacher), "prune_magnitude", out, monkeypatch)
    width = tiny_gan.generator.net[0].out_channels
    assert first.generator.net[0].out_channels == width  # the run's teacher
    assert second.generator.net[0].out_channels == int(width * 0.75)  # the assistant: pruned 25%, distilled
    assert [s["step"] for s in second.steps][-3:] == ["prune", "distill", "assistant"]
    final = load_folder(out / "final")
    assert "teacher assistant" in final.steps[-1]["learned_from"] and "learned_from" not in final.steps[1]
    rows = json.loads((out / "summary.json").read_text())
    assert rows[0]["step"] == "00-teacher" and math.isfinite(rows[-1]["psnr"])  # against the run's own teacher


def test_summary_table_prints_an_infinite_psnr(capsys: pytest.CaptureFixture[str]) -> None:
    """A rotated teacher's row compares the model with itself: its PSNR is stored as the string "inf"."""
    from slimgen.cli.pipeline import print_summary

    print_summary([{"step": "01-rotate_latent", "params": 10, "fid": 1.5, "psnr": "inf"},
                   {"step": "02-prune_gradient", "params": 10, "fid": 2.5, "psnr": 20.25}])
    out = capsys.readouterr().out
    assert "inf" in out and "20.2" in out and "01-rotate_latent" in out


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_recipe_parses(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.steps and recipe.teacher


GENERATOR_ONLY = """
teacher: {teacher}
steps:
  - prune_channels: {{ratio: 0.5}}
  - distill: {{epochs: 1, steps_per_epoch: 3, select: {{n: 64}}, losses: {{output: 10.0, feature: 1.0, adversarial: {adversarial}}}}}
evaluate: {{n: 64}}
"""


def test_a_shipped_style_recipe_runs_on_a_generator_only_folder_with_no_data(tmp_path: Path) -> None:
    """``adversarial: auto`` (the shipped recipes) is off for a teacher with no discriminator and a run with no
    data set (a 1x16x16 user generator: quality against the teacher's own samples), so the recipe distils
    data-free; a weight set by hand is one error naming what is missing."""
    import archnets
    import torch

    torch.manual_seed(0)
    g = archnets.InlineModulesG().eval()
    bundle = ModelBundle.from_modules("gan", {"generator": g}, {"generator": {}}, image_shape=(1, 16, 16),
                                      inputs=InputSpec(latent_shape=(16,)))
    bundle.specs["generator"].arch = "archnets:InlineModulesG"
    teacher = save_folder(bundle, tmp_path / "teacher")

    recipe = parse_recipe(GENERATOR_ONLY.format(teacher=teacher, adversarial="auto"), source="auto.yaml")
    result = compress(recipe, out=tmp_path / "run")
    assert [r["step"] for r in result.rows] == ["00-teacher", "01-prune_channels", "02-distill"]
    final = load_folder(tmp_path / "run" / "final")
    assert final.discriminator is None
    step = final.steps[-1]
    assert step["config"]["losses"]["adversarial"] == 0.0 and step["data"].startswith("none (data-free")
    # its norms and activations are made in forward: the feature term pairs the convolutions, not the image's
    assert [(p["student"], p["size"]) for p in step["feature_pairs"]] == [("conv1", [8, 8]), ("conv3", [16, 16])]

    recipe = parse_recipe(GENERATOR_ONLY.format(teacher=teacher, adversarial=0.05), source="set.yaml")
    with pytest.raises(ConfigError, match="adversarial loss needs a teacher with a discriminator part"):
        compress(recipe, out=tmp_path / "run2")


@pytest.mark.parametrize("last", ["export: {formats: [onnx]}",
                                  "quantize: {activations: {bits: 8, calibration: 16}}"])
def test_a_recipe_that_needs_onnx_of_a_model_onnx_cannot_express_stops_before_its_first_step(
        tmp_path: Path, last: str) -> None:
    """A StyleGAN2 generator whose modulated conv is grouped by the batch has no ONNX graph: a recipe with an ONNX
    export or int8 activations (run by ONNX Runtime) used to fail there, after its training; now it stops at once,
    nothing written. Without those steps the same teacher runs."""
    import archnets
    import torch

    torch.manual_seed(0)
    bundle = ModelBundle.from_modules("gan", {"generator": archnets.ModulatedG(fused=True, noise=False).eval()},
                                      {"generator": {"fused": True, "noise": False}}, image_shape=(1, 16, 16),
                                      inputs=InputSpec(latent_shape=(16,)))
    bundle.specs["generator"].arch = "archnets:ModulatedG"
    teacher = save_folder(bundle, tmp_path / "teacher")
    steps = "  - prune_channels: {{ratio: 0.5}}\n  - {last}\n"
    text = "teacher: {teacher}\nsteps:\n" + steps + "evaluate: {{n: 32, latency: false}}\n"
    recipe = parse_recipe(text.format(teacher=teacher, last=last), source="onnx.yaml")
    with pytest.raises(ConfigError, match=r"recipe step 2 \(\w+\) needs an ONNX graph of the model.*nothing was run"):
        compress(recipe, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    if last.startswith("export"):  # once: without those steps it runs
        recipe = parse_recipe(text.format(teacher=teacher, last="quantize: {weights: {method: linear, bits: 8}}"),
                              source="w.yaml")
        assert [r["step"] for r in compress(recipe, out=tmp_path / "run2").rows][-1] == "02-quantize"

"""The core contracts: one calibration set from quantize to export, recipe and CLI alike; the recipe bugs of
issue 17 (each test failed before its fix); the CLI's former logic now in the library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from slimgen.cli import main
from slimgen.errors import ConfigError
from slimgen.export.steps import Export
from slimgen.methods import MethodContext, apply_method
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.models.inputs import calibration_inputs
from slimgen.pipeline import parse_recipe
from slimgen.pipeline.runner import holds_step, run_context
from slimgen.quantize import ActivationQuant, LinearQuant, Quantization, quantize


def _initializers(path: Path) -> dict[str, np.ndarray]:
    """Every initializer of an ONNX file (the int8 weights, scales and zero points of a QDQ graph)."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _same_graph(a: Path, b: Path) -> bool:
    ia, ib = _initializers(a), _initializers(b)
    return ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia)


def _run(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 0


def test_quantize_keeps_the_given_calibration_inputs_and_export_calibrates_on_them(tiny_gan: ModelBundle,
                                                                                    tmp_path: Path) -> None:
    z = torch.randn(24, 8, generator=torch.Generator().manual_seed(5)) * 3  # not the contract's inputs
    q = quantize(tiny_gan, ActivationQuant(calibration=24), calibration=z)
    assert torch.equal(q.calibration.z, z) and q.meta["activation_quant"]["calibration_inputs"] == "given"
    from slimgen.export import export_onnx

    kept = export_onnx(q, tmp_path / "kept.onnx", int8=True)
    explicit = export_onnx(q, tmp_path / "explicit.onnx", int8=True, calibration=z)
    drawn = export_onnx(quantize(tiny_gan, ActivationQuant(calibration=24)), tmp_path / "drawn.onnx", int8=True)
    assert _same_graph(kept, explicit)  # z itself, not 24 drawn inputs
    assert not _same_graph(kept, drawn)
    loaded = load_folder(save_folder(q, tmp_path / "q"))  # the folder keeps them too
    assert torch.equal(loaded.calibration.z, z)
    assert _same_graph(export_onnx(loaded, tmp_path / "loaded.onnx", int8=True), kept)
    # a plain module carries them in its state
    from slimgen.models.pretrained import module_of

    g = quantize(module_of(tiny_gan.copy()), ActivationQuant(calibration=24), calibration=z)
    assert _same_graph(export_onnx(g, tmp_path / "module.onnx", int8=True), kept)


def test_cli_export_and_recipe_export_calibrate_identically(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    _run(["quantize", str(teacher), "--weights", "int8", "--activations", "int8", "--calibration", "16",
          "--out", str(tmp_path / "q")])
    _run(["export", str(tmp_path / "q"), "--out", str(tmp_path / "cli.onnx")])
    step = tmp_path / "step"
    step.mkdir()
    recipe = parse_recipe(f"teacher: {teacher}\nsteps:\n  - quantize: {{activations: {{calibration: 16}}}}\n"
                          "  - export: {formats: [onnx]}\n", source="r.yaml")
    quantized = apply_method("quantize", load_folder(teacher), recipe.steps[0].config)
    apply_method("export", quantized, recipe.steps[1].config, MethodContext(folder=step))
    assert _same_graph(tmp_path / "cli.onnx", step / "model.onnx")
    assert recipe.steps[1].config == Export(formats=["onnx"])  # int8 as the folder is, like the CLI


def test_recipe_export_of_mixed_precision_weights_says_dequantize(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    """Mixed-precision weights have no int8 graph: the recipe's float ONNX/TorchScript export is refused until
    the step says ``dequantize: true``, then writes a file that draws what the folder draws."""
    import onnxruntime as ort

    recipe = parse_recipe("teacher: zoo:dcgan-fmnist\nsteps:\n"
                          "  - quantize: {weights: {bits: 8, layer_bits: {net.0: 4}, entropy_coding: lzma}}\n"
                          "  - export: {formats: [onnx, torchscript]}\n"
                          "  - export: {formats: [onnx, torchscript], dequantize: true}\n", source="r.yaml")
    quantized = apply_method("quantize", tiny_gan, recipe.steps[0].config)
    for i in (1, 2):
        (tmp_path / str(i)).mkdir()
    with pytest.raises(ConfigError, match="--dequantize"):
        apply_method("export", quantized, recipe.steps[1].config, MethodContext(folder=tmp_path / "1"))
    apply_method("export", quantized, recipe.steps[2].config, MethodContext(folder=tmp_path / "2"))
    z = torch.randn(3, 8)
    with torch.no_grad():
        want = quantized.generator(z).numpy()
    session = ort.InferenceSession(str(tmp_path / "2" / "model.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: z.numpy()})[0]
    assert abs(got - want).max() < 1e-4
    assert (tmp_path / "2" / "model.ts").is_file()


def test_recipe_int4_weights_with_int8_activations_is_refused() -> None:
    text = ("teacher: zoo:dcgan-fmnist\nsteps:\n  - quantize: {weights: {method: linear, bits: 4}, "
            "activations: {calibration: 16}}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml:3: step 1 \(quantize\): int8 activations need int8 linear weights"):
        parse_recipe(text, source="r.yaml")
    with pytest.raises(ConfigError, match="int8 activations need int8 linear weights"):
        Quantization(weights=LinearQuant(bits=4), activations=ActivationQuant())


def test_activations_int8_keeps_the_weight_options(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    _run(["quantize", str(teacher), "--weights", "int8", "--per-tensor", "--asymmetric", "--scale", "mse",
          "--activations", "int8", "--calibration", "8", "--out", str(tmp_path / "q")])
    q = load_folder(tmp_path / "q")
    params = [e.params for e in q.encodings.values() if e.codec == "linear"]
    assert params and all(not p["symmetric"] and p["scale_method"] == "mse" and len(p["scale"]) == 1 for p in params)
    settings = q.meta["activation_quant"]
    assert (settings["per_channel"], settings["symmetric"]) == (False, False)
    # the int8 graph quantizes its weights the same way: one scale per tensor, with zero points
    conv_scales = [v for k, v in _initializers(_export(q, tmp_path)).items() if k.endswith("weight_scale")]
    assert conv_scales and all(s.size == 1 for s in conv_scales)


def _export(bundle: ModelBundle, tmp_path: Path) -> Path:
    from slimgen.export import export_onnx

    return export_onnx(bundle, tmp_path / "int8.onnx")


def test_recipe_training_steps_follow_the_runs_reference(tiny_gan: ModelBundle, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    def spy(config, bundle, *, teacher=None, dataset="fashion-mnist"):
        select = getattr(config, "select", config)
        seen.append((select.reference, dataset))
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr("slimgen.train.steps.scorer_for", spy)
    monkeypatch.setattr("slimgen.distill.steps.scorer_for", spy)
    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    for step in ("finetune: {epochs: 1}", "distill: {epochs: 1}"):
        for evaluate, want in [("{reference: teacher}", ("teacher", "fashion-mnist")),
                               ("{reference: digits}", ("auto", "digits"))]:
            recipe = parse_recipe(f"teacher: {teacher}\nsteps:\n  - {step}\nevaluate: {evaluate}\n", source="r.yaml")
            ctx = run_context(recipe, tiny_gan, tmp_path / "run")
            with pytest.raises(KeyboardInterrupt):
                apply_method(recipe.steps[0].name, tiny_gan, recipe.steps[0].config, ctx)
            assert seen[-1] == want, (step, evaluate)
    recipe = parse_recipe(f"teacher: {teacher}\nsteps:\n  - distill: {{epochs: 1}}\nevaluate: {{reference: teacher}}\n",
                          source="r.yaml")
    assert run_context(recipe, tiny_gan, tmp_path).dataset is None  # measured against the teacher: data-free


def test_prune_resume_check_lives_in_the_library(tiny_gan: ModelBundle, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from slimgen.prune import MagnitudePruning

    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    _run(["prune", str(teacher), "--method", "magnitude", "--ratio", "0.5", "--out", str(tmp_path / "p")])
    assert holds_step(tmp_path / "p", MagnitudePruning(sparsity=0.5), part="generator")
    assert not holds_step(tmp_path / "p", MagnitudePruning(sparsity=0.6), part="generator")
    capsys.readouterr()
    _run(["prune", str(teacher), "--method", "magnitude", "--ratio", "0.5", "--out", str(tmp_path / "p"), "--resume"])
    assert "already holds this pruning step" in capsys.readouterr().out


def test_calibration_inputs_come_from_one_seed(tiny_gan: ModelBundle) -> None:
    spec = tiny_gan.inputs
    assert torch.equal(calibration_inputs(spec, 4).z, calibration_inputs(spec, 4).z)
    q = quantize(tiny_gan, ActivationQuant(calibration=4))
    assert q.meta["activation_quant"]["calibration_seed"] == 1234 and q.calibration is None


def test_the_demo_recipe_is_package_data() -> None:
    import tomllib
    from importlib.resources import files

    from slimgen.pipeline.recipe import shipped_recipe

    path = shipped_recipe("default")
    assert path.is_file() and path.parent.name == "recipes" and path.parent.parent.name == "slimgen"
    assert (files("slimgen.recipes") / "default.yaml").read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert "*.yaml" in pyproject["tool"]["setuptools"]["package-data"]["slimgen.recipes"]  # in the wheel
    with pytest.raises(ConfigError, match=r"no shipped recipe 'nope'; shipped: .*default"):
        shipped_recipe("nope")


def test_unstructured90_writes_its_geometric_schedule_and_prunes_as_prune_iteratively(tiny_gan: ModelBundle) -> None:
    from slimgen.pipeline import load_recipe
    from slimgen.prune import GradientPruning, prune
    from slimgen.prune.schedules import step_config

    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "unstructured90.yaml")
    rounds = [s.config for s in recipe.steps if s.name == "prune_gradient"]
    method = GradientPruning(sparsity=0.9, scope="global", loss="output_projection", batch_size=8)
    assert rounds == [step_config(method, 0.9, 4, i) for i in range(4)]  # bench_prune's rounds, not copied numbers
    assert [round(c.sparsity, 4) for c in rounds] == [0.4377, 0.6838, 0.8222, 0.9]
    a, b = prune(tiny_gan, rounds[0]), prune(tiny_gan, step_config(method, 0.9, 4, 0))  # prune_iteratively's masks
    assert all(torch.equal(x, y) for x, y in zip(a.generator.state_dict().values(), b.generator.state_dict().values(),
                                                 strict=True))
    with pytest.raises(ConfigError, match=r"geometric needs integers 1 <= round <= rounds, got round 5 of 4"):
        parse_recipe("teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: {geometric: "
                     "{final: 0.9, round: 5, rounds: 4}}}\n", source="r.yaml")

"""The one registry: a method registered once (config + function, here in this file only) runs from Python,
the command line and a recipe, recorded the same way everywhere."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from slimgen.cli import main
from slimgen.errors import ConfigError
from slimgen.methods import METHODS, MethodContext, apply_method, load_library, parse_assignments, register_method
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.pipeline import compress, parse_recipe


@dataclass(frozen=True)
class ScaleOutput:
    """Toy method: multiply the generator's last layer's weights by ``factor`` (> 0)."""

    factor: float = 0.5
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ConfigError(f"factor must be > 0, got {self.factor}")


@register_method("toy_scale", ScaleOutput)
def toy_scale(bundle: ModelBundle, config: ScaleOutput, ctx: MethodContext) -> ModelBundle:
    out = bundle.copy()
    last = [m for m in out.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d | torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(config.factor)
    return out


def _last_weight(bundle: ModelBundle) -> torch.Tensor:
    return [m for m in bundle.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d | torch.nn.Conv2d)][-1].weight


def test_every_library_method_is_registered_once_with_a_dataclass_config() -> None:
    methods = load_library()
    for name in ("prune_channels", "prune_magnitude", "prune_gradient", "prune_random", "prune_threshold",
                 "rotate_latent", "finetune", "distill", "slim_student", "quantize", "export"):
        assert methods[name].name == name
    classes = [m.config_cls for m in methods.values()]
    assert len(classes) == len(set(classes))  # one name per config class


def test_toy_method_from_python(tiny_gan: ModelBundle) -> None:
    out = apply_method("toy_scale", tiny_gan, {"factor": 0.25})
    assert torch.allclose(_last_weight(out), 0.25 * _last_weight(tiny_gan))
    assert out.steps[-1] == {"step": "toy_scale", "config": {"factor": 0.25, "layers": ()}}
    with pytest.raises(ConfigError, match=r"toy_scale, factor: expected float, got str 'big'"):
        apply_method("toy_scale", tiny_gan, {"factor": "big"})
    with pytest.raises(ConfigError, match=r"toy_scale: factor must be > 0, got -1"):
        apply_method("toy_scale", tiny_gan, {"factor": -1})


def test_toy_method_from_the_cli(tiny_gan: ModelBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save_folder(tiny_gan, tmp_path / "model")
    with pytest.raises(SystemExit) as exit_:
        main(["apply", "toy_scale", str(model), "--out", str(tmp_path / "out"), "--set", "factor=0.5",
              "--set", "layers=[a, b]"])
    assert exit_.value.code == 0
    out = load_folder(tmp_path / "out")
    assert torch.allclose(_last_weight(out), 0.5 * _last_weight(tiny_gan))
    record = json.loads((tmp_path / "out" / "config.json").read_text())["steps"][-1]
    assert record == {"step": "toy_scale", "config": {"factor": 0.5, "layers": ["a", "b"]}}

    with pytest.raises(SystemExit) as exit_:
        main(["apply", "toy_scale", str(model), "--out", str(tmp_path / "bad"), "--set", "factr=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert "unknown key 'factr'; allowed: factor, layers" in err[0]
    assert not (tmp_path / "bad").exists()  # refused before any work
    with pytest.raises(SystemExit):
        main(["methods", "toy_scale"])
    assert "factor" in capsys.readouterr().out


def test_toy_method_from_a_recipe(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    teacher = save_folder(tiny_gan, tmp_path / "teacher")
    text = (f"teacher: {teacher}\nsteps:\n  - toy_scale: {{factor: 2.0}}\n"
            "evaluate: {n: 64, latency: false, reference: teacher}\n")
    recipe = parse_recipe(text, source="toy.yaml")
    assert recipe.steps[0].config == ScaleOutput(factor=2.0)
    result = compress(recipe, out=tmp_path / "run")
    final = load_folder(result.final)
    assert torch.allclose(_last_weight(final), 2.0 * _last_weight(tiny_gan))
    assert final.steps[-1]["step"] == "toy_scale" and final.steps[-1]["recipe_line"] == 3
    assert result.rows[1]["fid"] > 0
    with pytest.raises(ConfigError, match=r"toy\.yaml:3: step 1 \(toy_scale\): factor must be > 0"):
        parse_recipe(text.replace("2.0", "0.0"), source="toy.yaml")


def test_set_values_are_typed_as_in_a_recipe() -> None:
    assert parse_assignments(["epochs=3", "lr=0.001", "losses.output=10", "select.reference=teacher",
                              "formats=[onnx, torchscript]", "steps_per_epoch=null"]) == {
        "epochs": 3, "lr": 0.001, "losses": {"output": 10}, "select": {"reference": "teacher"},
        "formats": ["onnx", "torchscript"], "steps_per_epoch": None}
    with pytest.raises(ConfigError, match="expects KEY=VALUE"):
        parse_assignments(["epochs"])
    with pytest.raises(ConfigError, match="also has settings"):
        parse_assignments(["a=1", "a.b=1"])
    config = METHODS["distill"].config(parse_assignments(["epochs=2", "losses.perceptual=1", "lr_schedule=cosine"]))
    assert (config.epochs, config.losses.perceptual, config.lr_schedule) == (2, 1.0, "cosine")

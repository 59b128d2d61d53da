"""The train-vs-report rule, teacher-referenced quality for any image size, and selection that never loses work."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from slimgen.cli import app
from slimgen.data import ImageSet
from slimgen.distill import Distillation, DistillLosses, distill, slim_student
from slimgen.distill.task import Critics, DistillTask
from slimgen.errors import ConfigError, DataError
from slimgen.evaluate import evaluate
from slimgen.evaluate.features import (
    REPORTING,
    TRAINING,
    RandomConvFeatures,
    default_extractor,
    load_extractor,
    training_extractor,
)
from slimgen.evaluate.selection import Selection, selection_scorer
from slimgen.models import ModelBundle, load_folder, save_folder
from slimgen.models.inputs import InputSpec
from slimgen.pipeline.recipe import parse_recipe
from slimgen.train.checkpoint import META, STATE
from slimgen.train.finetune import FineTuning

REPORTING_SPECS = ["zoo:fmnist-eval", "inception", "random", "random:0"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # these tests run small models: one thread is as fast and kinder to a shared machine


# --- the rule, by construction -----------------------------------------------------------------------


def test_shipped_extractors_have_one_role_each() -> None:
    train, report = load_extractor("zoo:fmnist-classifier"), load_extractor("zoo:fmnist-eval")
    assert (train.role, report.role) == (TRAINING, REPORTING)
    assert train.weights_hash != report.weights_hash
    assert type(train.classifier) is not type(report.classifier)  # another architecture, not another seed only
    assert default_extractor((1, 28, 28)).name == "fmnist-eval"
    assert default_extractor((1, 28, 28), TRAINING).name == "fmnist-classifier"
    assert (default_extractor((3, 64, 64)).role, default_extractor((3, 64, 64), TRAINING).role) == (REPORTING, TRAINING)


@pytest.mark.parametrize("spec", REPORTING_SPECS)
@pytest.mark.parametrize("where", ["perceptual", "select"])
def test_recipe_training_or_selecting_in_the_reporting_space_is_refused_at_parse_time(spec: str, where: str) -> None:
    settings = (f"losses: {{output: 1, perceptual: 1}}, extractor: '{spec}'" if where == "perceptual"
                else f"select: {{extractor: '{spec}'}}")
    text = f"teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_channels: {{ratio: 0.5}}\n  - distill: {{epochs: 1, {settings}}}\n"
    with pytest.raises(ConfigError, match=r"<recipe>:4: step 2 \(distill\).*reporting feature extractor"):
        parse_recipe(text)


def test_finetune_recipe_selecting_in_the_reporting_space_is_refused() -> None:
    text = "teacher: zoo:dcgan-fmnist\nsteps:\n  - finetune: {epochs: 1, select: {extractor: zoo:fmnist-eval}}\n"
    with pytest.raises(ConfigError, match=r"best-epoch selection.*reporting"):
        parse_recipe(text)
    assert parse_recipe(text.replace("zoo:fmnist-eval", "zoo:fmnist-classifier")).steps[0].config.select.extractor \
        == "zoo:fmnist-classifier"


def test_a_copy_of_the_reporting_weights_is_refused_by_hash(tmp_path) -> None:
    copy = save_folder(load_folder("zoo:fmnist-eval"), tmp_path / "my-classifier")  # another name, same weights
    with pytest.raises(ConfigError, match="weights of a reporting extractor"):
        Distillation(losses=DistillLosses(perceptual=1.0), extractor=str(copy))
    with pytest.raises(ConfigError, match="weights of a reporting extractor"):
        Selection(extractor=str(copy))
    text = f"teacher: zoo:dcgan-fmnist\nsteps:\n  - distill: {{select: {{extractor: '{copy}'}}}}\n"
    with pytest.raises(ConfigError, match="<recipe>:3"):
        parse_recipe(text)
    own = save_folder(load_folder("zoo:fmnist-classifier"), tmp_path / "train-copy")
    assert training_extractor(str(own)).role == TRAINING  # a training extractor's copy is fine


def test_python_paths_refuse_reporting_extractors(tiny_gan: ModelBundle) -> None:
    for ext in (load_extractor("zoo:fmnist-eval"), RandomConvFeatures(seed=0)):
        with pytest.raises(ConfigError, match="reporting"):
            training_extractor(ext)
        with pytest.raises(ConfigError, match="perceptual term"):  # a task built by hand
            DistillTask(tiny_gan.generator, tiny_gan.generator, inputs=InputSpec((8,)), losses=DistillLosses(perceptual=1.0),
                        pairs=[], critics=Critics(extractor=ext), lr=1e-3, betas=(0.5, 0.999))
    with pytest.raises(ConfigError, match="reporting"):
        FineTuning(select={"extractor": "random:0"})
    with pytest.raises(ConfigError, match="reporting"):
        Selection(extractor="inception")
    assert training_extractor("random:1").role == TRAINING


def test_cli_refuses_reporting_extractor_for_perceptual_term_and_selection(tmp_path) -> None:
    runner = CliRunner()
    base = ["distill", "zoo:dcgan-fmnist", "--width", "0.5", "--out", str(tmp_path / "s"), "--epochs", "1"]
    for extra in (["--perceptual", "1", "--extractor", "zoo:fmnist-eval"], ["--select-extractor", "random"]):
        res = runner.invoke(app, base + extra)
        assert isinstance(res.exception, ConfigError) and "reporting feature extractor" in str(res.exception)
    assert not (tmp_path / "s").exists()  # refused before any work


# --- quality without matching data ----------------------------------------------------------------------


class Tutorial(nn.Module):
    """A small generator of the PyTorch DCGAN tutorial's shape: latents (B, nz, 1, 1) -> (B, 3, 16, 16) in [-1, 1]."""

    def __init__(self, nz: int = 8, width: int = 8) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, width * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(width * 2, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh(),  # (B, 3, 16, 16)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def _tutorial(seed: int) -> ModelBundle:
    torch.manual_seed(seed)
    g = Tutorial()
    for m in g.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.3)
    g.train()(torch.randn(64, 8, 1, 1))  # BatchNorm statistics
    return ModelBundle.from_modules("gan", {"generator": g.eval()}, {"generator": {}}, image_shape=(3, 16, 16),
                                    inputs=InputSpec((8, 1, 1)))


def test_teacher_referenced_quality_of_a_non_28x28_model() -> None:
    teacher, student = _tutorial(0), _tutorial(1)
    same = evaluate(teacher, teacher=teacher, n=64, latency=False)  # auto: no data set is 3x16x16
    assert same.reference_kind == "teacher" and same.reference_seed == 10_000
    assert "teacher samples" in same.reference and same.reference_n == 64
    assert same.extractor == "random-conv-s0" and same.extractor_role == REPORTING
    assert same.training_space["extractor"] == "random-conv-s1"  # the selection space, labelled beside it
    assert same.fid == pytest.approx(same.noise_fid) and same.psnr == math.inf  # a perfect copy sits at the floor
    other = evaluate(student, teacher=teacher, reference="teacher", n=64, latency=False)
    assert other.noise_fid == pytest.approx(same.noise_fid)  # the floor is the teacher's, not the student's
    assert other.fid > 2 * other.noise_fid and other.psnr < 30
    assert other.macs > 0 and other.params == sum(p.numel() for p in student.generator.parameters())


def test_teacher_reference_needs_a_teacher_and_auto_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="--teacher"):
        evaluate(_tutorial(0), n=8, latency=False)
    with pytest.raises(ConfigError, match="needs a teacher"):
        evaluate(_tutorial(0), reference="teacher", n=8, latency=False)


def test_reference_folder_of_any_size_is_resized_bicubic(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):  # mixed sizes, none 16x16
        size = (20 + i, 24) if i % 2 else (40, 33)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    r = evaluate(_tutorial(0), reference=str(tmp_path), n=16, latency=False)
    assert r.reference_kind == "data" and r.reference_n == 12 and "resized to 16x16, PIL bicubic" in r.reference
    assert math.isfinite(r.fid) and r.train_fid is not None


def test_cli_evaluate_teacher_reference_json(tmp_path) -> None:
    folder = tmp_path / "t"
    save_folder(_tutorial(0), folder)
    # the architecture is the test module's class: the CLI imports it as module:Class
    cfg = json.loads((folder / "config.json").read_text())
    assert ":" in cfg["parts"]["generator"]["arch"]
    res = CliRunner().invoke(app, ["evaluate", str(folder), "--teacher", str(folder), "--reference", "teacher",
                                   "-n", "16", "--no-latency", "--no-write", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["reference_kind"] == "teacher" and data["noise_fid"] == pytest.approx(data["fid"])


# --- selection: teacher-referenced when no data set matches; never loses an epoch ---------------------------


def test_selection_is_teacher_referenced_for_other_shapes_and_uses_the_training_space() -> None:
    teacher, student = _tutorial(0), _tutorial(1)
    score = selection_scorer(Selection(n=24), model=student, teacher=teacher)  # the run's data set: Fashion-MNIST
    assert (score.reference, score.extractor) == ("teacher", "random-conv-s1")
    assert score(teacher.generator) < score(student.generator)


@pytest.fixture
def pair(tiny_gan: ModelBundle, tiny_images: ImageSet) -> tuple[ModelBundle, ModelBundle]:
    return slim_student(tiny_gan, 0.5, seed=0), tiny_gan


def test_scoring_failure_leaves_a_resumable_run_with_the_epoch_on_disk(pair, tiny_images: ImageSet, tmp_path) -> None:
    student, teacher = pair
    broken = tmp_path / "ref.npy"
    broken.write_bytes(b"not an array")  # a reference that cannot be read
    config = Distillation(epochs=2, batch_size=16, steps_per_epoch=2, losses=DistillLosses(output=1.0))
    bad = selection_scorer(Selection(reference=str(broken), n=16), model=student, teacher=teacher)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(DataError):
        distill(student, teacher, config, data=tiny_images, checkpoint_dir=ckpt, device="cpu", score=bad)
    meta = json.loads((ckpt / META).read_text())
    assert meta["epoch"] == 1 and meta["history"][-1]["pending_score"] == 1.0  # epoch 1's weights, not scored
    from safetensors.torch import load_file

    saved = {k[len("module.generator."):]: v for k, v in load_file(str(ckpt / STATE)).items()
             if k.startswith("module.generator.")}
    assert saved and set(saved) == set(student.generator.state_dict())
    good = selection_scorer(Selection(reference="teacher", n=16), model=student, teacher=teacher)
    out = distill(student, teacher, config, data=tiny_images, checkpoint_dir=ckpt, resume=True, device="cpu",
                  score=good)
    history = json.loads((ckpt / META).read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all("score" in h and "pending_score" not in h for h in history)
    assert out.steps[-1]["best_epoch"] in (1, 2) and math.isfinite(out.steps[-1]["best_score"])

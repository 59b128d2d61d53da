"""Class-conditional DCGAN: architecture, `slimgen train cdcgan`, per-class quality."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slimgen.data import ImageSet
from slimgen.errors import ConfigError
from slimgen.evaluate.conditional import measure_conditional
from slimgen.models import ConditionalDCGANDiscriminator, ConditionalDCGANGenerator, InputSpec, load_folder
from slimgen.models.registry import architecture_name
from slimgen.train import ConditionalDCGANTraining, train
from tests.conftest import needs_fmnist

TINY = {"generator_widths": [8, 4], "discriminator_widths": [4, 8], "latent_dim": 8, "embed_dim": 4}


def test_generator_and_discriminator_use_the_label() -> None:
    torch.manual_seed(0)
    g = ConditionalDCGANGenerator(nz=8, num_classes=3, embed_dim=4, widths=[8, 4]).eval()
    d = ConditionalDCGANDiscriminator(num_classes=3, widths=[4, 8]).eval()
    z = torch.randn(5, 8)
    a, b = g(z, torch.zeros(5, dtype=torch.long)), g(z, torch.ones(5, dtype=torch.long))
    assert a.shape == (5, 1, 28, 28) and a.abs().max() <= 1
    assert not torch.allclose(a, b)  # same latents, other class: other images
    assert torch.equal(g(z[:, :, None, None], torch.zeros(5, dtype=torch.long)), a)  # (B, nz, 1, 1) works too
    assert d(a, torch.zeros(5, dtype=torch.long)).shape == (5,)
    assert not torch.allclose(d(a, torch.zeros(5, dtype=torch.long)), d(a, torch.full((5,), 2)))
    assert architecture_name(g) == "cdcgan_generator" and architecture_name(d) == "cdcgan_discriminator"
    with pytest.raises(ValueError, match="num_classes"):
        ConditionalDCGANGenerator(num_classes=0)


def test_train_writes_a_conditional_folder_and_resume_equals_uninterrupted(tiny_images: ImageSet,
                                                                           tmp_path: Path) -> None:
    full = train(ConditionalDCGANTraining(epochs=2, batch_size=32, **TINY), out=tmp_path / "full",
                 data=tiny_images, steps_per_epoch=2, device="cpu")
    train(ConditionalDCGANTraining(epochs=1, batch_size=32, **TINY), out=tmp_path / "part", data=tiny_images,
          steps_per_epoch=2, device="cpu")
    resumed = train(ConditionalDCGANTraining(epochs=2, batch_size=32, **TINY), out=tmp_path / "part",
                    data=tiny_images, steps_per_epoch=2, device="cpu", resume=True)
    for k, v in full.generator.state_dict().items():
        assert torch.allclose(v, resumed.generator.state_dict()[k]), k
    loaded = load_folder(tmp_path / "full")
    assert loaded.inputs == InputSpec((8,), num_classes=4)  # labels 0..3 in tiny_images
    assert loaded.specs["generator"].arch == "cdcgan_generator"
    x = loaded.inputs.draw(6, seed=1, classes=[0, 1, 2, 3, 0, 1])
    assert torch.equal(loaded.generator(*x.args()), full.generator.eval()(*x.args()))


def test_train_refuses_data_without_labels_and_labels_beyond_num_classes(tiny_images: ImageSet, tmp_path: Path) -> None:
    unlabelled = ImageSet(tiny_images.images, None, "unlabelled")
    with pytest.raises(ConfigError, match="needs labels"):
        train(ConditionalDCGANTraining(epochs=1, **TINY), out=tmp_path / "a", data=unlabelled, device="cpu")
    with pytest.raises(ConfigError, match=r"outside \[0, 2\)"):
        train(ConditionalDCGANTraining(epochs=1, num_classes=2, **TINY), out=tmp_path / "b", data=tiny_images,
              device="cpu")
    with pytest.raises(ConfigError, match="num_classes"):
        ConditionalDCGANTraining(num_classes=1)


def test_cli_train_cdcgan_errors_are_one_line(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((8, 28, 28), dtype=np.uint8))  # images without labels
    for args in (["--dataset", str(tmp_path / "x.npy")], ["--widths", "64,x"]):
        r = subprocess.run([sys.executable, "-m", "slimgen", "train", "cdcgan", "--out", str(tmp_path / "o"),
                            "--epochs", "1", *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr


class _Lookup(nn.Module):
    """A 'generator' that returns real images of the class it is asked for (labels shifted by ``shift``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int = 0) -> None:
        super().__init__()
        self.by_class = [images[labels == (k + shift) % 10] for k in range(10)]

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        idx = (z.flatten(1)[:, 0].abs() * 1000).long()  # a latent-dependent pick
        return torch.stack([self.by_class[int(k)][int(i) % len(self.by_class[int(k)])] for k, i in zip(y, idx, strict=True)])


@needs_fmnist
def test_per_class_accuracy_and_fid_follow_the_classes() -> None:
    from slimgen.data import load_dataset

    train_set = load_dataset("fashion-mnist", "train").subset(4000, seed=0)
    spec = InputSpec((4,), num_classes=10)
    right = measure_conditional(_Lookup(train_set.images, train_set.labels), spec=spec, classes=[1, 7],
                                n_per_class=100)
    wrong = measure_conditional(_Lookup(train_set.images, train_set.labels, shift=1), spec=spec, classes=[1, 7],
                                n_per_class=100)
    assert [s.label for s in right.per_class] == [1, 7] and right.per_class[0].name == "Trouser"
    assert right.accuracy is not None and right.accuracy > 0.85  # the classifier knows trousers and sneakers
    assert wrong.accuracy is not None and wrong.accuracy < 0.15  # asked for 1, got 2: counted as wrong
    assert all(r.fid < w.fid for r, w in zip(right.per_class, wrong.per_class, strict=True))
    assert right.per_class[0].n_reference == 1000  # Fashion-MNIST test has 1,000 images per class
    # teacher as reference: the same model on another seed is close, a wrong-class model is far
    vs_teacher = measure_conditional(_Lookup(train_set.images, train_set.labels, shift=1), spec=spec, classes=[1],
                                     n_per_class=100, teacher=_Lookup(train_set.images, train_set.labels))
    assert "teacher" in vs_teacher.reference and vs_teacher.per_class[0].fid > right.per_class[0].fid
    with pytest.raises(ConfigError, match="outside"):
        measure_conditional(_Lookup(train_set.images, train_set.labels), spec=spec, classes=[10])
    with pytest.raises(ConfigError, match="class-conditional"):
        measure_conditional(_Lookup(train_set.images, train_set.labels), spec=InputSpec((4,)))


def test_evaluate_reports_per_class_numbers_for_conditional_models_only():
    from slimgen.evaluate import evaluate

    cond = evaluate("zoo:cdcgan-fmnist", n=40, latency=False, write=False)
    assert cond.per_class is not None and len(cond.per_class["per_class"]) == 10
    assert cond.per_class["extractor"] == cond.extractor  # the reporting space, like the all-class FID
    assert all(c["n"] == 4 and c["fid"] >= 0 for c in cond.per_class["per_class"])
    assert evaluate("zoo:dcgan-fmnist", n=20, latency=False, write=False).per_class is None


# --- compressing a class-conditional GAN: every step that scores images with the discriminator passes the labels

@pytest.fixture(scope="module")
def tiny_cgan(tmp_path_factory: pytest.TempPathFactory):
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0)).mul(2).sub(1)
    data = ImageSet(x, torch.arange(128) % 4, "random")
    return train(ConditionalDCGANTraining(epochs=1, batch_size=32, **TINY), out=tmp_path_factory.mktemp("cg") / "m",
                 data=data, steps_per_epoch=2, device="cpu"), data


def test_taylor_channel_pruning_scores_the_conditional_discriminator_with_labels(tiny_cgan) -> None:
    from slimgen import api

    bundle, _ = tiny_cgan
    seen: list[tuple[int, ...]] = []
    d = bundle.discriminator
    hook = d.register_forward_pre_hook(lambda _m, args: seen.append(tuple(a.shape for a in args)))
    try:
        small = api.prune(bundle, api.ChannelPruning(ratio=0.5, importance="taylor"))
    finally:
        hook.remove()
    assert seen and all(len(s) == 2 and len(s[1]) == 1 for s in seen)  # D(x, y), y (B,)
    n_params = [sum(p.numel() for p in b.generator.parameters()) for b in (small, bundle)]
    assert n_params[0] < n_params[1]
    y = torch.tensor([0, 1, 2, 3])
    assert small.generator(torch.randn(4, 8), y).shape == (4, 1, 28, 28)


def test_finetune_and_distill_of_a_conditional_gan_train_d_on_labels(tiny_cgan) -> None:
    from slimgen import api
    from slimgen.api import Distillation, FineTuning

    bundle, data = tiny_cgan
    student = api.prune(bundle, api.ChannelPruning(ratio=0.5, importance="l1"))
    tuned = api.finetune(student, FineTuning(epochs=1, steps_per_epoch=2, batch_size=16), data=data, teacher=bundle,
                         device="cpu")
    assert not torch.equal(next(tuned.generator.parameters()), next(student.generator.parameters()))
    distilled = api.distill(student, bundle, Distillation(epochs=1, steps_per_epoch=2, batch_size=16,
                                                          losses={"output": 1.0, "adversarial": 0.1}),
                            data=data, device="cpu")
    assert distilled.steps[-1]["step"] == "distill"
    unlabelled = ImageSet(data.images, None, "unlabelled")
    with pytest.raises(ConfigError, match="has none"):
        api.finetune(student, FineTuning(epochs=1, steps_per_epoch=1, batch_size=16), data=unlabelled, device="cpu")
    with pytest.raises(ConfigError, match="has none"):
        api.distill(student, bundle, Distillation(epochs=1, steps_per_epoch=1, losses={"adversarial": 0.1}),
                    data=unlabelled, device="cpu")


def test_import_checks_a_conditional_discriminator_with_labels(tiny_cgan, tmp_path: Path) -> None:
    from slimgen.errors import ModelFolderError
    from slimgen.models.importer import import_model

    bundle, _ = tiny_cgan
    path = tmp_path / "ck.pth"
    from slimgen.models import DCGANDiscriminator

    plain_d = DCGANDiscriminator(widths=[4, 8]).state_dict()  # scores D(x) only
    torch.save({"g": bundle.generator.state_dict(), "d": bundle.discriminator.state_dict(), "plain": plain_d}, path)
    g_kwargs = {"nz": 8, "num_classes": 4, "embed_dim": 4, "widths": [8, 4]}
    d_kwargs = {"num_classes": 4, "widths": [4, 8]}
    imported = import_model(path, "cdcgan_generator", kwargs=g_kwargs, key="g", num_classes=4, discriminator=path,
                            discriminator_arch="cdcgan_discriminator", discriminator_kwargs=d_kwargs,
                            discriminator_key="d")
    assert set(imported.parts) == {"generator", "discriminator"} and imported.inputs.conditional
    with pytest.raises(ModelFolderError, match="D\\(x, y\\)"):
        import_model(path, "cdcgan_generator", kwargs=g_kwargs, key="g", num_classes=4, discriminator=path,
                     discriminator_arch="dcgan_discriminator", discriminator_kwargs={"widths": [4, 8]},
                     discriminator_key="plain")

"""Distillation: every loss term pulls the student towards the teacher, adapters, VAE, config errors, resume."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from slimgen.data import ImageSet
from slimgen.distill import (
    Distillation,
    DistillLosses,
    distill,
    match_layers,
    slim_student,
)
from slimgen.errors import ConfigError
from slimgen.models import ImageClassifier, ModelBundle, VAEDecoder, VAEEncoder, load_folder, save_folder
from slimgen.train.checkpoint import STATE

NZ_VAE = 4


def _run(student: ModelBundle, teacher: ModelBundle, data: ImageSet, *, epochs: int = 1, steps: int = 25,
         lr: float = 2e-3, **losses: float | str) -> ModelBundle:
    config = Distillation(epochs=epochs, lr=lr, batch_size=32, steps_per_epoch=steps, lr_schedule="constant",
                          losses=DistillLosses(**{"adversarial": 0.0, **losses}))  # only the terms a test names
    return distill(student, teacher, config, data=data, device="cpu")


def _latents(n: int, nz: int) -> torch.Tensor:
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(123))


@torch.no_grad()
def _output_l1(student: ModelBundle, teacher: ModelBundle, *, squared: bool = False) -> float:
    """Mean |student - teacher| (or squared) over 64 fixed latents, both in eval mode."""
    z = _latents(64, student.latent_dim or 1)
    distance = F.mse_loss if squared else F.l1_loss
    return distance(student.generator.eval()(z), teacher.generator.eval()(z)).item()


@pytest.fixture
def teacher(tiny_gan: ModelBundle) -> ModelBundle:
    """``tiny_gan`` with N(0, 0.3) ConvTranspose weights and settled BatchNorm statistics.

    A freshly initialised DCGAN draws nearly the same flat image for every latent (pixel std
    0.01); this one's images vary with the latent and span [-1, 1] like a trained teacher's.
    """
    teacher = tiny_gan.copy()
    g = torch.Generator().manual_seed(5)
    for m in teacher.generator.modules():
        if isinstance(m, torch.nn.ConvTranspose2d):
            m.weight.data = 0.3 * torch.randn(m.weight.shape, generator=g)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batch below
    teacher.generator.train()(torch.randn(256, 8, generator=g))
    for m in teacher.generator.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    teacher.generator.eval()
    return teacher


@pytest.fixture
def student(tiny_gan: ModelBundle) -> ModelBundle:
    return slim_student(tiny_gan, 0.5, seed=1)


@pytest.fixture
def patterned() -> ImageSet:
    """256 images (1x28x28): one fixed +-0.8 pattern plus small noise, so a model can learn what the data look like."""
    g = torch.Generator().manual_seed(1)
    pattern = torch.sign(torch.randn(1, 1, 7, 7, generator=g)).repeat_interleave(4, 2).repeat_interleave(4, 3)
    return ImageSet(0.8 * pattern + 0.2 * torch.rand(256, 1, 28, 28, generator=g).mul(2).sub(1), None, "patterned")


@pytest.fixture
def tiny_vae() -> ModelBundle:
    """A random VAE (latent 4, encoder widths [8, 16], decoder widths [16, 8]) on 1x28x28."""
    torch.manual_seed(0)
    ek = {"nz": NZ_VAE, "channels": 1, "image_size": 28, "widths": [8, 16]}
    dk = {"nz": NZ_VAE, "channels": 1, "image_size": 28, "widths": [16, 8]}
    dec, enc = VAEDecoder(**dk), VAEEncoder(**ek)
    dec.train()(torch.randn(16, NZ_VAE))  # non-trivial BatchNorm statistics
    return ModelBundle.from_modules("vae", {"generator": dec.eval(), "encoder": enc.eval()},
                                    {"generator": dk, "encoder": ek}, latent_dim=NZ_VAE, image_shape=(1, 28, 28))


# --- slimmer students and feature pairs ------------------------------------------------------------

def test_slim_student_halves_widths_and_keeps_the_discriminator(tiny_gan: ModelBundle, student: ModelBundle) -> None:
    g = student.generator
    assert student.specs["generator"].kwargs["widths"] == [8, 4]
    assert [m.out_channels for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)] == [8, 4, 1]
    assert g(torch.zeros(2, 8)).shape == (2, 1, 28, 28)
    d_student, d_teacher = student.discriminator.state_dict(), tiny_gan.discriminator.state_dict()
    assert all(torch.equal(d_student[k], d_teacher[k]) for k in d_teacher)
    assert student.steps[-1]["step"] == "slim_student"
    assert slim_student(tiny_gan, [1.0, 0.25]).specs["generator"].kwargs["widths"] == [16, 2]


@pytest.mark.parametrize("bad", [0.0, 1.5, [0.5], [0.5, 0.5, 0.5]])
def test_slim_student_rejects_bad_multipliers(tiny_gan: ModelBundle, bad: float | list[float]) -> None:
    with pytest.raises(ConfigError, match="width_multiplier"):
        slim_student(tiny_gan, bad)


def test_feature_pairs_match_spatial_sizes_with_the_right_channels(tiny_gan: ModelBundle, student: ModelBundle) -> None:
    pairs = match_layers(student.generator, tiny_gan.generator, 8)
    # DCGAN 28x28: ConvT -> BN -> ReLU at 7x7 (net.2) and at 14x14 (net.5); the 28x28 image is not a feature
    assert [(p.student, p.teacher, p.size) for p in pairs] == [("net.2", "net.2", (7, 7)), ("net.5", "net.5", (14, 14))]
    assert [(p.student_channels, p.teacher_channels) for p in pairs] == [(8, 16), (4, 8)]


def test_adapters_are_checkpointed_but_not_saved_in_the_student(
        tiny_gan: ModelBundle, student: ModelBundle, tiny_images: ImageSet, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    config = Distillation(epochs=1, batch_size=16, steps_per_epoch=2, losses={"output": 1.0, "feature": 1.0})
    out = distill(student, tiny_gan, config, data=tiny_images, checkpoint_dir=tmp_path / "ckpt", device="cpu")
    state = load_file(str(tmp_path / "ckpt" / STATE))
    shapes = {k: tuple(v.shape) for k, v in state.items() if k.startswith("module.adapters.")}
    assert shapes["module.adapters.net_2.weight"] == (16, 8, 1, 1)  # student 8 channels -> teacher 16
    assert shapes["module.adapters.net_5.weight"] == (8, 4, 1, 1)
    assert not any("adapter" in k for k in out.state_dict())
    assert [p["student"] for p in out.steps[-1]["feature_pairs"]] == ["net.2", "net.5"]


# --- every term pulls the student towards the teacher ------------------------------------------------

def test_output_loss_brings_the_student_close_to_the_teacher(
        teacher: ModelBundle, student: ModelBundle, tiny_images: ImageSet) -> None:
    before = _output_l1(student, teacher)
    out = _run(student, teacher, tiny_images, epochs=2, lr=5e-3, output=1.0)
    assert _output_l1(out, teacher) < 0.6 * before
    assert _output_l1(student, teacher) == before  # the input student is left unchanged


def test_l2_output_loss_also_brings_the_student_close(teacher: ModelBundle, student: ModelBundle, tiny_images: ImageSet) -> None:
    before = _output_l1(student, teacher, squared=True)
    out = _run(student, teacher, tiny_images, epochs=2, lr=5e-3, output=1.0, output_loss="l2")
    assert _output_l1(out, teacher, squared=True) < 0.6 * before


def test_bf16_training_computes_in_bf16_and_still_distils(
        teacher: ModelBundle, student: ModelBundle, tiny_images: ImageSet) -> None:
    """``precision: bf16``: the student's convolutions run in bf16 during the step (autocast), its weights stay
    float32, and the output loss still brings it as close to the teacher as the fp32 test above demands."""
    seen: set[torch.dtype] = set()
    s = student.copy()
    for m in s.generator.modules():
        if isinstance(m, torch.nn.ConvTranspose2d):
            m.register_forward_hook(lambda mod, args, out: seen.add(out.dtype) if mod.training else None)
    before = _output_l1(student, teacher)
    config = Distillation(epochs=2, lr=5e-3, batch_size=32, steps_per_epoch=25, losses={"output": 1.0, "adversarial": 0.0},
                          precision="bf16")
    out = distill(s, teacher, config, data=tiny_images, device="cpu")
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in out.generator.parameters())
    assert _output_l1(out, teacher) < 0.6 * before
    assert out.steps[-1]["config"]["precision"] == "bf16"
    assert out.steps[-1]["precision_ran"] == "bf16"


@pytest.mark.parametrize(("flags", "ran"), [({"avx2", "fma"}, "fp32"), ({"avx512f", "avx512_bf16"}, "bf16"),
                                            ({"avx512f", "amx_bf16", "amx_tile"}, "bf16")])
def test_fast_precision_trains_in_bf16_only_where_the_cpu_has_bf16_units(
        teacher: ModelBundle, student: ModelBundle, tiny_images: ImageSet, monkeypatch: pytest.MonkeyPatch,
        flags: set[str], ran: str) -> None:
    """``precision: fast`` (what the recipes use): bf16 autocast on a CPU with AMX-BF16 or AVX512-BF16, fp32 on
    one without (where autocast would emulate bf16, many times slower); the step records what ran."""
    import warnings

    import slimgen._env

    monkeypatch.setattr(slimgen._env, "cpu_flags", lambda: frozenset(flags))
    seen: set[torch.dtype] = set()
    s = student.copy()
    for m in s.generator.modules():
        if isinstance(m, torch.nn.ConvTranspose2d):
            m.register_forward_hook(lambda mod, args, out: seen.add(out.dtype) if mod.training else None)
    config = Distillation(epochs=1, batch_size=16, steps_per_epoch=2, losses={"output": 1.0, "adversarial": 0.0},
                          precision="fast")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fast never warns: it picks what the CPU runs natively
        out = distill(s, teacher, config, data=tiny_images, device="cpu")
    assert seen == {torch.bfloat16 if ran == "bf16" else torch.float32}
    assert out.steps[-1]["config"]["precision"] == "fast" and out.steps[-1]["precision_ran"] == ran


def test_bf16_on_a_cpu_without_bf16_units_runs_as_asked_and_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    import slimgen._env
    from slimgen.train import loop

    monkeypatch.setattr(slimgen._env, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    cpu = torch.device("cpu")
    with pytest.warns(UserWarning, match="no bf16 arithmetic.*precision 'fast'"):
        assert loop.resolve_precision("bf16", cpu) == "bf16"
    assert loop.resolve_precision("auto", cpu) == "fp32" and loop.resolve_precision("fp32", cpu) == "fp32"


def _history(student: ModelBundle, teacher: ModelBundle, data: ImageSet, tmp: Path, **losses: float) -> list[dict[str, float]]:
    """Per-epoch mean losses of a 3-epoch run, read back from the checkpoint's history."""
    from slimgen.io import read_json

    config = Distillation(epochs=3, lr=5e-3, batch_size=32, steps_per_epoch=10, lr_schedule="constant",
                          losses=DistillLosses(**{"output": 0.0, "adversarial": 0.0, **losses}))
    distill(student, teacher, config, data=data, checkpoint_dir=tmp, device="cpu")
    return read_json(tmp / "state.json")["history"]


def test_feature_loss_decreases(teacher: ModelBundle, student: ModelBundle, tiny_images: ImageSet, tmp_path: Path) -> None:
    history = _history(student, teacher, tiny_images, tmp_path, feature=1.0)
    assert history[-1]["feature"] < 0.7 * history[0]["feature"]
    assert "output" not in history[0]  # terms with weight 0 are not computed


def test_perceptual_loss_brings_classifier_features_closer(
        teacher: ModelBundle, student: ModelBundle, tiny_images: ImageSet, tmp_path: Path) -> None:
    torch.manual_seed(0)
    clf = ImageClassifier(channels=1, image_size=28, num_classes=4, feature_dim=16)
    clf.train()(tiny_images.images[:64])  # BatchNorm statistics
    folder = save_folder(ModelBundle.from_modules("classifier", {"classifier": clf.eval()}, {"classifier": {
        "channels": 1, "image_size": 28, "num_classes": 4, "feature_dim": 16}}), tmp_path / "clf")

    @torch.no_grad()
    def distance(bundle: ModelBundle) -> float:
        z = _latents(64, 8)
        return F.mse_loss(clf.features(bundle.generator.eval()(z)), clf.features(teacher.generator.eval()(z))).item()

    config = Distillation(epochs=1, lr=1e-2, batch_size=8, steps_per_epoch=20, extractor=str(folder),
                          losses={"output": 0.0, "perceptual": 1.0})
    out = distill(student, teacher, config, data=tiny_images, device="cpu")
    assert distance(out) < 0.85 * distance(student)  # a random classifier's features move slowly


def _pretrained_critic(teacher: ModelBundle, student: ModelBundle, data: ImageSet) -> ModelBundle:
    """``teacher`` whose discriminator learnt (40 steps) to tell ``data`` from the student's images."""
    from slimgen.distill.losses import discriminator_loss

    teacher = teacher.copy()
    d = teacher.discriminator.train()
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    with torch.no_grad():
        fakes = student.generator.eval()(_latents(64, 8))
    for i in range(40):
        loss = discriminator_loss(d(data.images[i % 4 * 64:][:64]), d(fakes))
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()
    return teacher


def test_adversarial_loss_makes_fakes_fool_the_teachers_discriminator(
        teacher: ModelBundle, student: ModelBundle, patterned: ImageSet) -> None:
    teacher = _pretrained_critic(teacher, student, patterned)
    d0 = copy.deepcopy(teacher.discriminator).eval()

    @torch.no_grad()
    def fooled(bundle: ModelBundle) -> float:
        """Mean probability that the teacher's (initial) discriminator calls the images real."""
        return torch.sigmoid(d0(bundle.generator.eval()(_latents(64, 8)))).mean().item()

    before = fooled(student)
    assert before < 0.2
    out = _run(student, teacher, patterned, epochs=1, steps=30, lr=2e-3, output=0.0, adversarial=1.0)
    assert fooled(out) > before + 0.2
    d_new, d_old = out.discriminator.state_dict(), teacher.discriminator.state_dict()
    assert not torch.equal(d_new["net.0.weight"], d_old["net.0.weight"])  # the discriminator trained too


# --- VAE ------------------------------------------------------------------------------------------

def test_vae_distillation_runs_and_reloads_identically(tiny_vae: ModelBundle, tiny_images: ImageSet, tmp_path: Path) -> None:
    student = slim_student(tiny_vae, 0.5)
    assert student.specs["generator"].kwargs["widths"] == [8, 4] and "encoder" in student.parts
    config = Distillation(epochs=1, lr=2e-3, batch_size=32, steps_per_epoch=5,
                          losses={"output": 1.0, "feature": 1.0, "vae_recon": 1.0, "vae_kl": 0.1})
    out = distill(student, tiny_vae, config, data=tiny_images, device="cpu")
    save_folder(out, tmp_path / "student")
    back = load_folder(tmp_path / "student")
    z = _latents(16, NZ_VAE)
    with torch.no_grad():
        assert torch.equal(back.generator(z), out.generator(z))
        mu, _ = back.parts["encoder"](tiny_images.images[:8])
        assert torch.equal(mu, out.parts["encoder"](tiny_images.images[:8])[0])
    assert back.steps[-1]["step"] == "distill" and back.kind == "vae"


def test_vae_recon_lowers_reconstruction_error(tiny_vae: ModelBundle, patterned: ImageSet) -> None:
    student = slim_student(tiny_vae, 0.5)
    x = patterned.images[:64]

    @torch.no_grad()
    def recon_error(bundle: ModelBundle) -> float:
        mu, _ = tiny_vae.parts["encoder"](x)
        return F.mse_loss(bundle.generator.eval()(mu), x).item()

    out = _run(student, tiny_vae, patterned, epochs=2, lr=5e-3, output=0.0, vae_recon=1.0)
    assert recon_error(out) < 0.6 * recon_error(student)
    enc_new, enc_old = out.parts["encoder"].state_dict(), tiny_vae.parts["encoder"].state_dict()
    assert all(torch.equal(enc_new[k], enc_old[k]) for k in enc_old)  # without vae_kl the encoder stays frozen


def test_vae_kl_lowers_the_encoders_kl(tiny_vae: ModelBundle, tiny_images: ImageSet) -> None:
    from slimgen.distill.losses import kl_to_prior

    x = tiny_images.images[:64]
    tiny_vae.parts["encoder"].head.bias.data[:NZ_VAE] += 1.0  # a posterior mean away from the prior's

    @torch.no_grad()
    def kl(bundle: ModelBundle) -> float:
        return kl_to_prior(*bundle.parts["encoder"](x)).item()

    out = _run(slim_student(tiny_vae, 0.5), tiny_vae, tiny_images, epochs=1, steps=15, output=0.0, vae_kl=1.0)
    assert kl(out) < 0.5 * kl(tiny_vae)


# --- config and input errors -----------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"output": -1.0}, "distillation loss weight output must be >= 0, got -1.0"),
    ({"output": 0.0}, "all distillation loss weights are 0; set at least one of output, feature, perceptual, "
                      "adversarial, vae_recon, vae_kl > 0"),
    ({"output_loss": "l3"}, "output_loss must be one of l1, l2; got 'l3'"),
])
def test_losses_validation_messages(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        DistillLosses(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_unknown_loss_and_setting_are_named() -> None:
    with pytest.raises(ConfigError) as err:
        Distillation(losses={"output": 1.0, "style": 2.0})
    assert str(err.value) == ("unknown distillation loss 'style'; known: output, feature, perceptual, adversarial, "
                              "vae_recon, vae_kl, output_loss, adversarial_real, adversarial_every, adversarial_auto")
    with pytest.raises(ConfigError, match="unknown distillation setting 'epoch'"):
        Distillation.from_dict({"epoch": 3})
    assert Distillation.from_dict({"epochs": 3, "losses": {"feature": 2.0}}).losses == DistillLosses(feature=2.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"lr": 0.0}, "lr must be > 0, got 0.0"),
    ({"steps_per_epoch": 0}, "steps_per_epoch must be >= 1 or None, got 0"),
    ({"lr_schedule": "linear"}, "lr_schedule must be one of constant, cosine, got 'linear'"),
    ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16, fast, got 'fp16'"),
])
def test_distillation_validation_messages(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Distillation(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_losses_that_the_models_cannot_serve_fail_before_training(
        tiny_gan: ModelBundle, tiny_vae: ModelBundle, student: ModelBundle, tiny_images: ImageSet) -> None:
    with pytest.raises(ConfigError, match="vae_recon and vae_kl need a VAE teacher"):
        _run(student, tiny_gan, tiny_images, vae_recon=1.0)
    with pytest.raises(ConfigError, match="adversarial loss needs a teacher with a discriminator"):
        _run(slim_student(tiny_vae, 0.5), tiny_vae, tiny_images, adversarial=1.0)
    with pytest.raises(ConfigError, match="same latent size"):
        _run(slim_student(tiny_vae, 0.5), tiny_gan, tiny_images)


# --- resume ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("every", [1, 2])
def test_resume_equals_an_uninterrupted_run(tiny_gan: ModelBundle, student: ModelBundle, tiny_images: ImageSet,
                                            tmp_path: Path, every: int) -> None:
    """``every`` 2 with 3 steps an epoch: the resumed epoch starts at step 3, an odd one, so a resume that
    counted steps from 0 again would run the adversarial term on other steps and end elsewhere."""
    def config(epochs: int) -> Distillation:
        return Distillation(epochs=epochs, lr=1e-3, batch_size=16, steps_per_epoch=3,
                            losses={"output": 1.0, "feature": 1.0, "adversarial": 0.1, "adversarial_every": every})

    full = distill(student, tiny_gan, config(2), data=tiny_images, checkpoint_dir=tmp_path / "a", device="cpu")
    distill(student, tiny_gan, config(1), data=tiny_images, checkpoint_dir=tmp_path / "b", device="cpu")
    resumed = distill(student, tiny_gan, config(2), data=tiny_images, checkpoint_dir=tmp_path / "b", resume=True,
                      device="cpu")
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["generator.net.0.weight"], student.state_dict()["generator.net.0.weight"])


def test_ema_is_what_is_kept_and_resumes(tiny_gan: ModelBundle, student: ModelBundle, tiny_images: ImageSet,
                                         tmp_path: Path) -> None:
    def config(epochs: int, ema: float) -> Distillation:
        return Distillation(epochs=epochs, lr=1e-3, batch_size=16, steps_per_epoch=3, ema=ema,
                            losses={"output": 1.0, "adversarial": 0.1})

    plain = distill(student, tiny_gan, config(2, 0.0), data=tiny_images, device="cpu")
    full = distill(student, tiny_gan, config(2, 0.5), data=tiny_images, checkpoint_dir=tmp_path / "a", device="cpu")
    assert not torch.equal(plain.generator.net[0].weight, full.generator.net[0].weight)  # the average, not the last
    distill(student, tiny_gan, config(1, 0.5), data=tiny_images, checkpoint_dir=tmp_path / "b", device="cpu")
    resumed = distill(student, tiny_gan, config(2, 0.5), data=tiny_images, checkpoint_dir=tmp_path / "b", resume=True,
                      device="cpu")
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.steps[-1]["config"]["ema"] == 0.5
    with pytest.raises(ConfigError, match=r"ema must be a number in \[0, 1\)"):
        Distillation(ema=1.0)


class _Killed(Exception):
    pass


def test_a_cosine_run_killed_mid_way_resumes_to_the_same_model(tiny_gan: ModelBundle, student: ModelBundle,
                                                               tiny_images: ImageSet, tmp_path: Path) -> None:
    """The same 3-epoch command, killed while scoring epoch 2 (its weights already on disk) and resumed, sets the same
    rates and ends with the same model."""
    from slimgen.io import read_json

    config = Distillation(epochs=3, lr=1e-3, batch_size=16, steps_per_epoch=3, lr_schedule="cosine",
                          losses={"output": 1.0, "adversarial": 0.1})

    def scorer(kill_at: int | None = None) -> Callable[[torch.nn.Module], float]:
        calls = [0]

        def score(generator: torch.nn.Module) -> float:  # later epochs score better: the last one is kept
            calls[0] += 1
            if calls[0] == kill_at:
                raise _Killed
            return -float(calls[0])
        return score

    full = distill(student, tiny_gan, config, data=tiny_images, checkpoint_dir=tmp_path / "a", device="cpu",
                   score=scorer())
    with pytest.raises(_Killed):
        distill(student, tiny_gan, config, data=tiny_images, checkpoint_dir=tmp_path / "b", device="cpu",
                score=scorer(kill_at=2))
    meta = read_json(tmp_path / "b" / "state.json")
    assert meta["epoch"] == 2 and meta["history"][-1]["pending_score"] == 1.0  # saved before scoring, not yet scored
    resumed = distill(student, tiny_gan, config, data=tiny_images, checkpoint_dir=tmp_path / "b", resume=True,
                      device="cpu", score=scorer())
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    groups = read_json(tmp_path / "a" / "state.json")["optimizers"]["generator"]["param_groups"]
    assert groups[0]["initial_lr"] == 1e-3
    assert groups[0]["lr"] == pytest.approx(2.5e-4)  # the last epoch's: 1e-3 * 0.5 * (1 + cos(2 pi / 3))
    constant = distill(student, tiny_gan, replace(config, lr_schedule="constant"), data=tiny_images, device="cpu")
    assert not torch.equal(constant.state_dict()["generator.net.0.weight"], a["generator.net.0.weight"])


def test_an_unstructured_pruned_student_keeps_its_zeros(teacher: ModelBundle, tiny_images: ImageSet, tmp_path: Path) -> None:
    from slimgen.prune import MagnitudePruning, prune

    sparse = prune(teacher, MagnitudePruning(sparsity=0.8))
    zeros = {n: p == 0 for n, p in sparse.generator.named_parameters() if n.endswith("weight") and (p == 0).any()}
    assert zeros, "pruning left no zeros to keep"
    out = _run(sparse, teacher, tiny_images, epochs=1, steps=10, lr=5e-3, output=1.0, adversarial=0.1)
    params = dict(out.generator.named_parameters())
    assert set(params) == set(dict(sparse.generator.named_parameters()))  # masks folded back, no weight_orig left
    for name, mask in zeros.items():
        assert (params[name][mask] == 0).all(), f"{name}: distillation revived pruned weights"
        assert (params[name][~mask] != dict(sparse.generator.named_parameters())[name][~mask]).any()  # the rest trained
    reloaded = load_folder(save_folder(out, tmp_path / "m"))
    assert {n: e.codec for n, e in reloaded.encodings.items()} == {n: e.codec for n, e in sparse.encodings.items()}


def test_fake_quant_distils_onto_the_grid_that_quantize_stores(tiny_gan: ModelBundle, student: ModelBundle,
                                                               tiny_images: ImageSet, tmp_path: Path) -> None:
    """Quantization-aware distillation: the student ends on its scheme's grid (net.0 at 3 bits: at most 7
    levels per output channel), so ``quantize`` with the same scheme changes nothing; it resumes like float
    distillation, and a scheme or a sparse student it cannot serve is refused before training."""
    from slimgen.prune import MagnitudePruning, prune
    from slimgen.quantize import LinearQuant, quantize

    scheme = LinearQuant(bits=8, layer_bits={"net.0": 3})

    def config(epochs: int) -> Distillation:
        return Distillation(epochs=epochs, lr=1e-3, batch_size=16, steps_per_epoch=3, fake_quant={"bits": 8,
                            "layer_bits": {"net.0": 3}}, losses={"output": 1.0, "feature": 1.0, "adversarial": 0.1})

    assert config(1).fake_quant == scheme
    full = distill(student, tiny_gan, config(2), data=tiny_images, checkpoint_dir=tmp_path / "a", device="cpu")
    w = full.generator.net[0].weight
    assert max(w[:, c].unique().numel() for c in range(w.shape[1])) <= 7
    assert not any(n.startswith("parametrizations") or "original" in n for n in full.generator.state_dict())
    q = quantize(full, scheme)
    z = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(q.generator(z), full.generator(z))
    float_run = distill(student, tiny_gan, replace(config(2), fake_quant=None), data=tiny_images, device="cpu")
    assert max(float_run.generator.net[0].weight[:, c].unique().numel() for c in range(w.shape[1])) > 7
    assert load_folder(save_folder(q, tmp_path / "q")).encodings["generator.net.0.weight"].params["bits"] == 3
    distill(student, tiny_gan, config(1), data=tiny_images, checkpoint_dir=tmp_path / "b", device="cpu")
    resumed = distill(student, tiny_gan, config(2), data=tiny_images, checkpoint_dir=tmp_path / "b", resume=True,
                      device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True))
    assert full.steps[-1]["config"]["fake_quant"]["layer_bits"] == {"net.0": 3}
    with pytest.raises(ConfigError, match="fake_quant"):
        Distillation(fake_quant={"bits": 8, "layer_bit": {"net.0": 3}})
    with pytest.raises(ConfigError, match="layer_bits"):
        Distillation(fake_quant={"layer_bits": {"net.0": 1}})
    with pytest.raises(ConfigError, match="fake_quant with sparse-stored layers"):
        distill(prune(student, MagnitudePruning(sparsity=0.5)), tiny_gan, config(1), data=tiny_images, device="cpu")


def test_the_discriminator_trains_at_its_own_learning_rate(tiny_gan: ModelBundle) -> None:
    """``discriminator_lr`` sets the adversarial critic's optimizer (None: the student's lr); a bad value is a
    one-line error."""
    from slimgen.distill.config import DistillLosses
    from slimgen.distill.task import Critics, DistillTask

    def d_lr(value: float | None) -> float:
        task = DistillTask(copy.deepcopy(tiny_gan.generator), tiny_gan.generator, inputs=tiny_gan.inputs,
                           losses=DistillLosses(output=1.0, adversarial=0.1), pairs=[],
                           critics=Critics(discriminator=copy.deepcopy(tiny_gan.discriminator)), lr=1e-3,
                           betas=(0.5, 0.999), discriminator_lr=value)
        return task.optimizers["discriminator"].param_groups[0]["lr"]

    assert d_lr(None) == 1e-3 and d_lr(1e-4) == 1e-4
    assert Distillation(discriminator_lr=1e-4).discriminator_lr == 1e-4
    for bad in (0, -1e-4, "fast", True):
        with pytest.raises(ConfigError, match="discriminator_lr must be a positive number"):
            Distillation(discriminator_lr=bad)


def test_the_critic_can_learn_the_teachers_images_as_real(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    """``adversarial_real: teacher``: the discriminator's real class is the teacher's images of the step's own
    latents (one teacher forward per step, shared with the output term), so a data-free run keeps the
    adversarial term, ``auto`` included; with ``data`` a data-free run still refuses it in one line."""
    from slimgen.distill.config import DistillLosses
    from slimgen.distill.task import Critics, DistillTask
    from slimgen.models.inputs import GenInputs, run

    teacher, d = tiny_gan.generator.eval(), copy.deepcopy(tiny_gan.discriminator)
    student = copy.deepcopy(tiny_gan.generator).train()
    seen: dict[str, list[torch.Tensor]] = {"z": [], "d": [], "teacher": []}
    student.register_forward_pre_hook(lambda m, args: seen["z"].append(args[0].clone()))
    d.register_forward_pre_hook(lambda m, args: seen["d"].append(args[0].detach().clone()))
    handle = teacher.register_forward_hook(lambda m, args, out: seen["teacher"].append(out))
    task = DistillTask(student, teacher, inputs=tiny_gan.inputs, pairs=[], critics=Critics(discriminator=d),
                       losses=DistillLosses(output=1.0, adversarial=0.1, adversarial_real="teacher"), lr=1e-3,
                       betas=(0.5, 0.999))
    logs = task.step(torch.zeros(16, 1, 28, 28), None, torch.Generator().manual_seed(0))
    handle.remove()
    assert len(seen["teacher"]) == 1 and "loss_d" in logs  # one teacher forward serves both terms
    with torch.no_grad():
        expected = run(teacher, GenInputs(z=seen["z"][0]))
    assert torch.allclose(seen["d"][0], expected)  # the critic's first batch: the teacher's images of those latents
    assert not torch.equal(seen["d"][0], torch.zeros_like(seen["d"][0]))  # not the (blank) batch images

    def config(real: str, adversarial: float | str = "auto") -> Distillation:
        return Distillation(epochs=1, batch_size=16, steps_per_epoch=3,
                            losses={"output": 1.0, "adversarial": adversarial, "adversarial_real": real})

    out = distill(tiny_gan, tiny_gan, config("teacher"), data=None, device="cpu")  # data-free
    assert out.steps[-1]["config"]["losses"]["adversarial"] == 0.05  # auto: on, with the teacher's images as real
    assert not torch.equal(out.discriminator.state_dict()["net.0.weight"],
                           tiny_gan.discriminator.state_dict()["net.0.weight"])  # the critic trained
    assert distill(tiny_gan, tiny_gan, config("data"), data=None, device="cpu").steps[-1]["config"]["losses"][
        "adversarial"] == 0.0  # auto without real images: off, as before
    with pytest.raises(ConfigError, match=r"the adversarial loss.* need real images"):
        distill(tiny_gan, tiny_gan, config("data", 0.1), data=None, device="cpu")
    with pytest.raises(ConfigError, match="adversarial_real must be one of data, teacher"):
        DistillLosses(adversarial_real="real")
    for bad in (0, 2.5, "3", True):
        with pytest.raises(ConfigError, match="adversarial_every must be a whole number >= 1"):
            DistillLosses(adversarial_every=bad)  # type: ignore[arg-type]


def test_feature_pairs_of_a_generator_whose_convolutions_are_functions() -> None:
    """A hand-written StyleGAN2 generator (modulated convs calling F.conv2d, activations as functions) has no norm,
    activation or conv module making a 4-D map: the feature term pairs the submodules that do (it stopped with "found
    no student and teacher layers" and the shipped recipes' feature: 1 stopped with it)."""
    from tests.archnets import ModulatedG

    torch.manual_seed(0)
    teacher, student = ModulatedG(noise=False).eval(), ModulatedG(ch=(16, 8, 8), noise=False).eval()
    pairs = match_layers(student, teacher, 16)
    assert [p.size for p in pairs] == [(4, 4), (8, 8), (16, 16)]  # the toRGB outputs (1 channel) are not features
    assert pairs[0].student == "conv0" and all(p.student == p.teacher and "rgb" not in p.student for p in pairs)
    assert [(p.student_channels, p.teacher_channels) for p in pairs] == [(16, 32), (8, 16), (8, 16)]


class _TokenG(torch.nn.Module):
    """Tokens (B, 16, w) from a Linear, an MLP on them, one transposed conv to the image: no 4-D map before the image."""

    def __init__(self, w: int = 16) -> None:
        super().__init__()
        self.w = w
        self.fc = torch.nn.Linear(8, 16 * w)
        self.mlp = torch.nn.Sequential(torch.nn.LayerNorm(w), torch.nn.Linear(w, w), torch.nn.GELU())
        self.up = torch.nn.ConvTranspose2d(w, 1, 7, 7)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t = self.fc(z).view(-1, 16, self.w)
        t = t + self.mlp(t)
        return torch.tanh(self.up(t.transpose(1, 2).reshape(-1, self.w, 4, 4)))


def test_a_generator_without_feature_maps_distils_without_the_feature_term() -> None:
    """A generator whose layers before the image make tokens (B, N, C), not maps: the feature term has nothing to pair
    and the shipped recipes' ``feature: 1`` stopped the run ("found no student and teacher layers"); now a warning, the
    term off and recorded so; with no other term on, one error line."""
    torch.manual_seed(0)

    def bundle(w: int) -> ModelBundle:
        return ModelBundle.from_modules("gan", {"generator": _TokenG(w).eval()}, {"generator": {"w": w}}, latent_dim=8,
                                        image_shape=(1, 28, 28))

    teacher, student = bundle(16), bundle(8)
    config = Distillation(epochs=1, batch_size=8, steps_per_epoch=2, losses={"output": 1.0, "feature": 1.0})
    with pytest.warns(UserWarning, match="the feature loss found no student and teacher layers .* distilling without it"):
        out = distill(student, teacher, config)
    step = out.steps[-1]
    assert step["feature_pairs"] == [] and step["config"]["losses"]["feature"] == 0.0
    assert step["config"]["losses"]["output"] == 1.0 and step["epochs_run"] == 1
    with warnings.catch_warnings():  # the error alone, no "distilling without it" before it
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match="it was the only loss term"):
            distill(student, teacher, replace(config, losses={"output": 0.0, "feature": 1.0}))

"""The one trainer: any objective and hook runs through it; presets by config class; mode restore; schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimgen.data import ImageSet
from slimgen.errors import ConfigError
from slimgen.models import ModelBundle
from slimgen.models.inputs import InputSpec
from slimgen.models.mode import in_mode
from slimgen.prune.schedules import GradualPruning, fit_to_run
from slimgen.train.loop import LoopSettings, run_epochs
from slimgen.train.objectives import (
    Adversarial,
    Batch,
    Objective,
    gaussian_recon,
    input_gradients_only,
    kl_to_prior,
    reparameterize,
)
from slimgen.train.trainer import EMA, Hook, StepCallback, Trainer, tune


class Brightness(Objective):
    """A toy objective: the mean pixel of the model's samples should reach ``target``."""

    def __init__(self, target: float) -> None:
        super().__init__()
        self.target = target
        self.weights = {"brightness": 1.0}

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor]:
        fake, _ = batch.generated()
        return {"brightness": (fake.mean() - self.target) ** 2}


class Events(Hook):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def start(self, model: nn.Module) -> None:
        self.seen.append("start")

    def end(self, model: nn.Module) -> None:
        self.seen.append("end")


def test_a_new_objective_and_hooks_train_through_the_one_trainer(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    g = tiny_gan.copy().generator
    spec = InputSpec((8,))

    @torch.no_grad()
    def brightness() -> float:
        with in_mode(g):
            return float(g(spec.draw(64, seed=3).z).mean())

    before, steps, events = brightness(), [], Events()
    trainer = Trainer(g, [Brightness(0.5)], lr=1e-2, inputs=spec,
                      hooks=[events, StepCallback(lambda step, m: steps.append(step))])
    history = run_epochs(trainer, tiny_images, LoopSettings(epochs=2, batch_size=16, steps_per_epoch=10), desc="toy")
    trainer.finish()
    assert abs(brightness() - 0.5) < abs(before - 0.5) / 2  # the objective was minimised
    assert history[-1]["brightness"] < history[0]["brightness"]
    assert steps == list(range(1, 21)) and events.seen == ["start", "end"]


@pytest.mark.parametrize("env", ["1", None])
def test_training_bars_follow_tqdm_disable(tiny_gan: ModelBundle, tiny_images: ImageSet, env: str | None,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``TQDM_DISABLE=1`` turns the per-step bar off (bench scripts and notebooks log to files); the one line per
    epoch stays either way."""
    import tqdm.std

    init = tqdm.std.tqdm.__init__  # an in-process CLI call earlier in the session turns bars off for good:
    monkeypatch.setattr(tqdm.std.tqdm, "__init__", getattr(init, "__wrapped__", init))  # tqdm's own, for this test
    if env is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", env)
    g = tiny_gan.copy().generator
    trainer = Trainer(g, [Brightness(0.5)], lr=1e-2, inputs=InputSpec((8,)))
    run_epochs(trainer, tiny_images, LoopSettings(epochs=1, batch_size=16, steps_per_epoch=3), desc="toy")
    trainer.finish()
    captured = capsys.readouterr()
    assert ("toy 1/1:" in captured.err) == (env is None)  # the bar: its description, then the steps
    assert "toy epoch 1/1" in captured.out + captured.err


def test_the_generator_term_gives_the_discriminator_no_gradient(tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    """The adversarial term backpropagates to the generator only: the discriminator's gradients after a whole
    step are those of its own step (its optimizer's), and its parameters train again afterwards."""
    g, d = tiny_gan.copy().generator, tiny_gan.copy().discriminator
    adversarial = Adversarial(d, lr=1e-3, betas=(0.5, 0.999))
    seen: list[list[torch.Tensor]] = []
    adversarial.optimizers["discriminator"].register_step_pre_hook(
        lambda opt, args, kwargs: seen.append([p.grad.clone() for p in d.parameters()]))
    trainer = Trainer(g, [adversarial], lr=1e-3, inputs=InputSpec((8,)))
    before = [p.detach().clone() for p in g.parameters()]
    trainer.step(tiny_images.images[:16], None, torch.Generator().manual_seed(0))
    assert len(seen) == 1
    assert all(torch.equal(p.grad, q) for p, q in zip(d.parameters(), seen[0], strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(g.parameters(), before, strict=True))  # the generator learned
    assert all(p.requires_grad for p in d.parameters())
    frozen = next(d.parameters()).requires_grad_(False)
    with input_gradients_only(d):
        assert not any(p.requires_grad for p in d.parameters())
    assert not frozen.requires_grad and all(p.requires_grad for p in list(d.parameters())[1:])


def test_an_adversarial_term_every_third_step_steps_the_critic_there_only_at_three_times_the_weight(
        tiny_gan: ModelBundle, tiny_images: ImageSet) -> None:
    """``every=3``: the discriminator steps and the generator's term is counted on steps 0, 3, 6, ... only, with
    3x the weight there; the epoch's log averages the term over the steps that ran it, not over all steps."""
    g, d = tiny_gan.copy().generator, tiny_gan.copy().discriminator
    adversarial = Adversarial(d, lr=1e-3, betas=(0.5, 0.999), weight=0.1, every=3)
    d_steps: list[int] = []
    trainer = Trainer(g, [Brightness(0.5), adversarial], lr=1e-3, inputs=InputSpec((8,)), log_total=True)
    adversarial.optimizers["discriminator"].register_step_pre_hook(
        lambda opt, args, kwargs: d_steps.append(trainer.global_step))
    logs = [trainer.step(tiny_images.images[:16], None, torch.Generator().manual_seed(i)) for i in range(7)]
    assert d_steps == [0, 3, 6]
    assert [i for i, log in enumerate(logs) if "adversarial" in log] == [0, 3, 6]
    assert all("loss_d" not in log for i, log in enumerate(logs) if i not in (0, 3, 6))
    for log in logs:  # the total: brightness, plus 0.3 x the term where it ran
        assert log["total"] == pytest.approx(log["brightness"] + 0.3 * log.get("adversarial", 0.0), rel=1e-5)
    with pytest.raises(ConfigError, match="every must be a whole number >= 1, got 0"):
        Adversarial(d, lr=1e-3, betas=(0.5, 0.999), every=0)

    class Sometimes:  # a task whose second term is reported on even steps only
        def __init__(self) -> None:
            self.modules: dict[str, nn.Module] = {"m": nn.Linear(1, 1)}
            self.optimizers: dict[str, torch.optim.Optimizer] = {}
            self.calls = 0

        def step(self, images: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> dict[str, float]:
            self.calls += 1
            return {"a": float(self.calls), **({"b": 10.0 * self.calls} if self.calls % 2 == 0 else {})}

    history = run_epochs(Sometimes(), tiny_images, LoopSettings(epochs=1, batch_size=8, steps_per_epoch=4))
    assert history[0]["a"] == pytest.approx(2.5) and history[0]["b"] == pytest.approx(30.0)  # (20 + 40) / 2


def test_tune_runs_the_preset_of_the_config_class_and_names_the_known_ones(tiny_gan: ModelBundle) -> None:
    with pytest.raises(ConfigError, match=r"no training preset for GradualPruning; known: .*Distillation.*FineTuning"):
        import slimgen.distill  # noqa: F401  (registers Distillation)

        tune(tiny_gan, GradualPruning())


def test_in_mode_restores_the_mode_after_an_error() -> None:
    m = nn.Sequential(nn.BatchNorm1d(2)).train()
    with pytest.raises(RuntimeError), in_mode(m):
        assert not m.training and not m[0].training
        raise RuntimeError
    assert m.training and m[0].training
    with in_mode(m.eval(), training=True):
        assert m.training
    assert not m.training


def test_vae_maths() -> None:
    mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    assert kl_to_prior(mu, logvar) == 0  # the prior itself
    assert kl_to_prior(torch.ones(4, 3), logvar) == pytest.approx(1.5)  # 0.5 * |mu|^2 per image
    eps = torch.randn(4, 3)
    assert torch.allclose(reparameterize(mu + 1, 2 * torch.log(torch.full((4, 3), 3.0)), eps), 1 + 3 * eps)  # sd 3
    x = torch.zeros(2, 1, 2, 2)
    assert gaussian_recon(x + 0.2, x, sigma=0.2) == pytest.approx(4 * 0.04 / (2 * 0.04))  # 4 pixels, each 1/2


@pytest.mark.parametrize("total", [1, 3, 100, 1334, 9999])
def test_gradual_schedule_fitted_to_a_run(total: int) -> None:
    fitted = fit_to_run(GradualPruning(sparsity=0.8), total)
    assert fitted.end_step == max(1, total * 3 // 4)  # the CLI's rule before it was shared
    assert fitted.frequency == max(1, fitted.end_step // 20) and fitted.sparsity == 0.8
    assert fit_to_run(GradualPruning(), 1334) == GradualPruning()  # the config's defaults are the same rule
    assert fit_to_run(GradualPruning(), total, end_step=7).end_step == 7


def test_ema_hook_averages_the_weights_with_a_warm_up(tiny_gan: ModelBundle) -> None:
    g = tiny_gan.copy().generator
    ema = EMA(0.9)
    ema.start(g)
    expected = {k: v.clone() for k, v in ema.shadow.state_dict().items()}  # type: ignore[union-attr]
    for step in (1, 2, 3, 50):
        with torch.no_grad():
            for p in g.parameters():
                p.add_(torch.randn_like(p))
        ema.on_step(step, g)
        d = min(0.9, (1 + step) / (10 + step))
        for k, v in g.state_dict().items():
            expected[k] = expected[k].lerp(v, 1 - d) if k.endswith(("weight", "bias")) else v.clone()
    got = ema.shadow.state_dict()  # type: ignore[union-attr]
    assert all(torch.allclose(got[k].float(), expected[k].float(), atol=1e-6) for k in expected)
    assert not torch.allclose(got["net.0.weight"], g.state_dict()["net.0.weight"])
    assert set(ema.modules) == {"ema"} and not any(p.requires_grad for p in ema.shadow.parameters())  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="ema decay must be in"):
        EMA(1.0)


def test_ema_refresh_gives_the_average_its_own_batchnorm_statistics(tiny_gan: ModelBundle) -> None:
    """The copied running statistics belong to the live weights; refresh replaces them with the exact mean and
    (unbiased) variance of the average's own activations over the refresh batches, and leaves the weights."""
    g = tiny_gan.copy().generator
    ema = EMA(0.9, batchnorm_batches=3)
    ema.start(g)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p))
    ema.on_step(100, g)  # the live model's statistics copied onto weights that differ from it
    shadow = ema.shadow
    assert shadow is not None
    bn = next(m for m in shadow.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen: list[torch.Tensor] = []
    handle = bn.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    weights = {k: v.clone() for k, v in shadow.state_dict().items() if k.endswith(("weight", "bias"))}
    ema.refresh()
    handle.remove()
    assert len(seen) == 3 and not shadow.training and not bn.training
    assert bn.momentum == 0.1  # restored
    means = torch.stack([x.mean((0, 2, 3)) for x in seen])
    variances = torch.stack([x.transpose(0, 1).flatten(1).var(1) for x in seen])
    torch.testing.assert_close(bn.running_mean, means.mean(0))
    torch.testing.assert_close(bn.running_var, variances.mean(0))
    assert all(torch.equal(shadow.state_dict()[k], v) for k, v in weights.items())
    EMA(0.9, batchnorm_batches=0).refresh()  # nothing started, nothing to do: no error

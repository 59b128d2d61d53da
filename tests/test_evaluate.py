"""Evaluation on synthetic data: metric maths, fidelity, cost, caching, API, CLI and errors."""

from __future__ import annotations

import copy
import json
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from typer.testing import CliRunner

from slimgen.cli import app
from slimgen.errors import ConfigError, ModelFolderError
from slimgen.evaluate import (
    ClassifierFeatures,
    EvalResult,
    InceptionFeatures,
    class_histogram,
    count_macs,
    evaluate,
    extract,
    fid,
    inception_score,
    kid,
    load_extractor,
    load_inception,
    measure_fidelity,
    precision_recall,
    reference_features,
    stored_bytes,
)
from slimgen.evaluate.inception import FID_WEIGHTS_FILE, FIDInceptionV3
from slimgen.evaluate.memo import MEMO, module_key
from slimgen.evaluate.reference import cache_path
from slimgen.models import DCGANGenerator, ImageClassifier, ModelBundle, save_folder
from slimgen.prune import ChannelPruning, prune
from slimgen.runtime.engines import Engine


def _gaussian_features(n: int, d: int, *, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    """(n, d) correlated Gaussian features."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(123)) / math.sqrt(d)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.double() + shift


def _numpy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Independent FID: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b)) with scipy."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def test_fid_agrees_with_numpy_scipy_to_1e6_relative() -> None:
    real, fake = _gaussian_features(600, 16), _gaussian_features(500, 16, shift=0.3, seed=1) * 1.2
    ours = fid(real, fake)
    reference = _numpy_frechet(real.numpy(), fake.numpy())
    assert reference > 0.5
    assert ours == pytest.approx(reference, rel=1e-6)


def test_fid_and_kid_near_zero_for_same_distribution_and_grow_with_shift() -> None:
    real = _gaussian_features(1000, 8)
    fids = [fid(real, _gaussian_features(1000, 8, shift=s, seed=2)) for s in (0.0, 0.5, 1.0)]
    kids = [kid(real, _gaussian_features(1000, 8, shift=s, seed=2), subsets=20, subset_size=200)[0]
            for s in (0.0, 0.5, 1.0)]
    assert fids[0] < 0.1 and fids[0] < fids[1] < fids[2]
    assert abs(kids[0]) < 0.01 and kids[0] < kids[1] < kids[2]


def test_kid_is_reproducible_with_seed_and_std_nonnegative() -> None:
    real, fake = _gaussian_features(300, 8), _gaussian_features(300, 8, shift=0.5, seed=3)
    a, b = kid(real, fake, subsets=10, subset_size=100, seed=7), kid(real, fake, subsets=10, subset_size=100, seed=7)
    assert a == b and a[1] >= 0


def test_precision_recall_detects_mode_dropping_and_disjoint_sets() -> None:
    real = torch.cat([_gaussian_features(300, 4, shift=0.0), _gaussian_features(300, 4, shift=20.0, seed=1)])
    same = torch.cat([_gaussian_features(300, 4, seed=5), _gaussian_features(300, 4, shift=20.0, seed=6)])
    one_mode = _gaussian_features(600, 4, seed=7)
    far = _gaussian_features(600, 4, shift=100.0, seed=8)
    p, r = precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    p, r = precision_recall(real, one_mode)
    assert p > 0.9 and r < 0.6
    assert precision_recall(real, far) == (0.0, 0.0)


def test_inception_score_and_histogram_on_known_predictions() -> None:
    confident = torch.eye(10).repeat(50, 1) * 50  # (500, 10): each class equally often, near one-hot
    one_class = torch.zeros(500, 10)
    one_class[:, 3] = 50
    assert inception_score(confident, splits=1) == pytest.approx((10.0, 0.0), rel=1e-3)
    assert 1.0 < inception_score(confident)[0] <= 10.0  # 10 random splits: uneven class counts per split
    assert inception_score(one_class)[0] == pytest.approx(1.0, abs=1e-6)
    assert class_histogram(one_class) == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert sum(class_histogram(confident)) == pytest.approx(1.0)


def test_fidelity_identical_and_hand_computed_psnr() -> None:
    g = torch.Generator().manual_seed(0)
    teacher = torch.rand(16, 1, 28, 28, generator=g) * 2 - 1
    same = measure_fidelity(teacher, teacher, student_features=torch.ones(16, 4), teacher_features=torch.ones(16, 4))
    assert same.psnr == math.inf and same.ssim == pytest.approx(1.0) and same.feature_distance == 0.0
    student = (teacher + 0.1 * torch.randn(16, 1, 28, 28, generator=g)).clamp(-1, 1)
    mse01 = float((((student + 1) / 2 - (teacher + 1) / 2) ** 2).mean())  # in [0, 1] units
    f = measure_fidelity(student, teacher, student_features=torch.zeros(16, 2), teacher_features=torch.ones(16, 2) * 3)
    assert f.psnr == pytest.approx(10 * math.log10(1 / mse01), rel=1e-5)
    assert 0 < f.ssim < 1
    assert f.feature_distance == pytest.approx(math.sqrt(18))


def test_macs_of_conv_transpose_match_hand_count() -> None:
    layer = nn.ConvTranspose2d(8, 4, kernel_size=4, stride=2, padding=1, bias=False)
    x = torch.randn(2, 8, 7, 7)
    assert layer(x).shape == (2, 4, 14, 14)
    # every input pixel scatters a (cout, k, k) patch for each input channel: cin * cout * k * k * H_in * W_in
    assert count_macs(layer, x) == 8 * 4 * 4 * 4 * 7 * 7


class _ConstInput(nn.Module):
    """StyleGAN's start: a learned constant expanded to the batch (a view of a parameter) fed to a submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.randn(1, 8, 4, 4))
        self.conv = nn.Conv2d(8, 2, 1, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(self.const.expand(z.shape[0], -1, -1, -1))


def test_macs_of_a_generator_feeding_an_expanded_parameter_to_a_layer() -> None:
    """Counting must not fail on it (FlopCounterMode under no_grad did: no grad function to hook), nor leave grads."""
    g = _ConstInput()
    with torch.no_grad():
        assert count_macs(g, torch.randn(3, 16)) == 8 * 2 * 4 * 4
    assert all(p.grad is None for p in g.parameters())


def test_stored_bytes_counts_generator_tensors(tiny_gan: ModelBundle, tmp_path) -> None:
    save_folder(tiny_gan, tmp_path / "m")
    expected = sum(t.numel() * t.element_size() for t in tiny_gan.generator.state_dict().values())
    assert stored_bytes(tmp_path / "m" / "model.safetensors", prefix="generator.") == expected
    assert stored_bytes(tmp_path / "m" / "model.safetensors") > expected  # the discriminator too


# --- end to end on a tiny setup: random classifier features, a .npy reference data set --------------------------


@pytest.fixture
def setup(tmp_path, monkeypatch) -> dict:
    """A random classifier extractor and a 64-image .npy reference; the cache goes to tmp_path."""
    monkeypatch.setenv("SLIMGEN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    clf = ImageClassifier(feature_dim=16).eval()
    ext = ClassifierFeatures(clf, name="random-clf", input_shape=(1, 28, 28), class_names=list("abcdefghij"))
    images = (torch.rand(64, 1, 28, 28) * 255).to(torch.uint8).numpy()
    data = tmp_path / "ref.npy"
    np.save(data, images)
    return {"ext": ext, "data": str(data), "clf": clf}


def test_evaluate_end_to_end_with_teacher_writes_metrics(tiny_gan: ModelBundle, setup: dict, tmp_path) -> None:
    folder = save_folder(tiny_gan, tmp_path / "gan")
    result = evaluate(folder, teacher=folder, reference=setup["data"], n=40, seed=3, extractor=setup["ext"],
                      latency=False)
    assert isinstance(result, EvalResult)
    assert (result.n, result.seed, result.extractor, result.reference_n) == (40, 3, "random-clf", 64)
    assert result.psnr == math.inf and result.ssim == pytest.approx(1.0) and result.feature_distance == 0.0
    assert result.fid > 0 and 0 <= result.precision <= 1 and len(result.class_histogram) == 10
    assert result.params == sum(p.numel() for p in tiny_gan.generator.parameters())
    assert result.latency_ms_b1 is None
    written = json.loads((folder / "metrics.json").read_text())
    assert written["fid"] == pytest.approx(result.fid) and written["psnr"] == "inf"


def test_same_seed_same_numbers_other_seed_other_latents(tiny_gan: ModelBundle, setup: dict) -> None:
    kw = {"reference": setup["data"], "n": 40, "extractor": setup["ext"], "latency": False}
    a, b, c = evaluate(tiny_gan, seed=0, **kw), evaluate(tiny_gan, seed=0, **kw), evaluate(tiny_gan, seed=1, **kw)
    assert a.fid == b.fid and a.kid_mean == b.kid_mean
    assert a.fid != c.fid


def test_pipeline_fid_equals_torchmetrics_fed_images_directly(tiny_gan: ModelBundle, setup: dict) -> None:
    ext, ref = setup["ext"], reference_features(setup["ext"], setup["data"], "test")
    real = torch.from_numpy(np.load(setup["data"])).float() / 255  # (64, 1, 28, 28) in [0, 1]
    fake = (tiny_gan.generator(torch.randn(32, 8)).detach() + 1) / 2
    direct = FrechetInceptionDistance(feature=ext, normalize=True)
    direct.update(real.double(), real=True)
    direct.update(fake.double(), real=False)
    ours = fid(ref.features.features, extract(ext, fake * 2 - 1).features)
    assert ours == pytest.approx(float(direct.compute()), rel=1e-4)


def test_reference_cache_is_reused_and_keyed_by_weights(setup: dict, monkeypatch) -> None:
    ext = setup["ext"]
    first = reference_features(ext, setup["data"], "test")
    assert cache_path(setup["data"], "test", ext).is_file()
    monkeypatch.setattr("slimgen.evaluate.reference.extract", lambda *a, **k: pytest.fail("cache not used"))
    assert torch.equal(reference_features(ext, setup["data"], "test").features.features, first.features.features)
    other = ImageClassifier(feature_dim=16)
    other_ext = ClassifierFeatures(other, name="random-clf", input_shape=(1, 28, 28))
    assert cache_path(setup["data"], "test", other_ext) != cache_path(setup["data"], "test", ext)


def test_cached_and_uncached_evaluations_give_the_same_numbers(tiny_gan: ModelBundle, setup: dict) -> None:
    kw = {"reference": setup["data"], "n": 40, "extractor": setup["ext"], "latency": False, "write": False}
    path = cache_path(setup["data"], "test", setup["ext"])
    assert not path.is_file()
    cold = evaluate(tiny_gan, **kw)
    assert path.is_file()
    warm = evaluate(tiny_gan, **kw)
    assert (cold.fid, cold.kid_mean, cold.precision, cold.recall) == (warm.fid, warm.kid_mean, warm.precision, warm.recall)


def test_repeated_evaluations_sample_once_and_give_the_same_numbers(tiny_gan: ModelBundle, setup: dict,
                                                                   monkeypatch) -> None:
    """A recipe run evaluates each step against the same teacher on the same latents: the teacher's samples and
    noise floor, and an unchanged model's samples, are computed once per process; the numbers are a fresh run's."""
    student = prune(tiny_gan, ChannelPruning(ratio=0.5))
    kw = {"teacher": tiny_gan, "reference": setup["data"], "n": 40, "extractor": setup["ext"], "latency": False,
          "write": False}

    def numbers(r: EvalResult) -> dict:
        return {k: v for k, v in r.to_dict().items() if k != "seconds"}

    monkeypatch.setenv("SLIMGEN_EVAL_MEMO", "0")
    fresh = numbers(evaluate(student, **kw))
    monkeypatch.setenv("SLIMGEN_EVAL_MEMO", "1")
    assert numbers(evaluate(student, **kw)) == fresh
    by_teacher = numbers(evaluate(student, **{**kw, "reference": "teacher"}))  # the teacher's samples as reference
    monkeypatch.setattr("slimgen.evaluate.api._features_of", lambda *a, **k: pytest.fail("sampled again"))
    again = evaluate(copy.deepcopy(student), **kw)  # another object, the same model
    assert numbers(again) == fresh and MEMO.hits >= 4
    assert numbers(evaluate(student, **{**kw, "reference": "teacher"})) == by_teacher


def test_a_model_changed_in_place_is_evaluated_again(tiny_gan: ModelBundle, setup: dict) -> None:
    kw = {"teacher": tiny_gan, "reference": setup["data"], "n": 40, "extractor": setup["ext"], "latency": False,
          "write": False}
    student = copy.deepcopy(tiny_gan)
    before = evaluate(student, **kw)
    with torch.no_grad():
        student.generator.net[0].weight.mul_(1.5)  # a parameter changed in place
    after = evaluate(student, **kw)
    assert after.fid != before.fid and after.psnr != before.psnr
    # a plain attribute that forward reads is part of the key too; an engine (no tensors decide it) has none
    scaled = nn.Sequential(nn.Linear(2, 2))
    key = module_key(scaled)
    scaled[0].gain = 2.0
    assert module_key(scaled) != key
    assert module_key(copy.deepcopy(scaled)) == module_key(scaled)  # a copy of the same model: the same key
    assert module_key(Engine(lambda z: z, tiny_gan.inputs, runtime="x", precision="fp32", detail="")) is None


def test_nearly_identical_samples_are_warned_about(tiny_gan: ModelBundle, setup: dict) -> None:
    """A random or collapsed generator (one image, repeated) scores FID near 0 against a reference of its own kind:
    evaluate says so instead of letting the number pass for quality."""
    kw = {"reference": setup["data"], "n": 40, "extractor": setup["ext"], "latency": False, "write": False}
    varied = copy.deepcopy(tiny_gan)  # weights x3: samples that differ (mean spread 0.17; the random tiny one: 0.007)
    with torch.no_grad():
        for p in varied.generator.parameters():
            if p.dim() > 1:
                p.mul_(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(varied, **kw)
    with pytest.warns(UserWarning, match="the model's samples are nearly identical"):
        evaluate(tiny_gan, **kw)
    with pytest.warns(UserWarning, match="the teacher's samples .the reference. are nearly identical"):
        evaluate(varied, teacher=tiny_gan, **{**kw, "reference": "teacher"})


def test_channels_last_extraction_equals_the_plain_forward(setup: dict) -> None:
    """extract() runs the extractor channels-last in chunks; the features equal a plain NCHW call to float rounding."""
    ext, clf = setup["ext"], copy.deepcopy(setup["clf"])
    images = torch.rand(300, 1, 28, 28) * 2 - 1  # more than one chunk
    with torch.no_grad():
        plain = clf.features(images)  # (300, 16), the classifier's own NCHW forward on [-1, 1] images
    torch.testing.assert_close(extract(ext, images, batch_size=300).features, plain, atol=1e-5, rtol=1e-5)


def _rgb_gan() -> ModelBundle:
    gk = {"nz": 8, "channels": 3, "image_size": 28, "widths": [16, 8]}
    return ModelBundle.from_modules("gan", {"generator": DCGANGenerator(**gk).eval()}, {"generator": gk},
                                    latent_dim=8, image_shape=(3, 28, 28))


def test_image_shape_mismatch_fails_clearly(setup: dict) -> None:
    with pytest.raises(ConfigError, match=r"\(3, 28, 28\).*\(1, 28, 28\)"):
        evaluate(_rgb_gan(), reference=setup["data"], n=8, extractor=setup["ext"], latency=False)


def test_teacher_with_other_latent_size_fails(tiny_gan: ModelBundle, setup: dict) -> None:
    gk = {"nz": 4, "channels": 1, "image_size": 28, "widths": [16, 8]}
    other = ModelBundle.from_modules("gan", {"generator": DCGANGenerator(**gk).eval()}, {"generator": gk},
                                     latent_dim=4, image_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="latent size"):
        evaluate(tiny_gan, teacher=other, reference=setup["data"], n=8, extractor=setup["ext"], latency=False)


def test_cli_json_and_mismatch_error(tiny_gan: ModelBundle, setup: dict, tmp_path) -> None:
    clf_folder = save_folder(ModelBundle.from_modules("classifier", {"classifier": setup["clf"]},
                                                      {"classifier": {"feature_dim": 16}}), tmp_path / "clf")
    gan = save_folder(tiny_gan, tmp_path / "gan")
    runner = CliRunner()
    args = ["evaluate", str(gan), "--dataset", setup["data"], "-n", "20", "--extractor", str(clf_folder),
            "--no-latency", "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "class_histogram", "params", "nonzero_params",
                "macs", "weight_bytes", "latency_ms_b1", "latency_ms_b64", "extractor", "n", "reference", "seed"):
        assert key in data
    assert data["n"] == 20 and data["extractor"] == "clf"
    rgb = save_folder(_rgb_gan(), tmp_path / "rgb")
    res = runner.invoke(app, ["evaluate", str(rgb), *args[2:]])
    assert isinstance(res.exception, ConfigError) and "reference data" in str(res.exception)


# --- Inception path: random weights of the same architecture --------------------------------------------------


@pytest.fixture(scope="module")
def random_inception() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_inception_weights_round_trip_and_features(random_inception: FIDInceptionV3, tmp_path,
                                                   monkeypatch) -> None:
    path = tmp_path / "hub" / "checkpoints" / FID_WEIGHTS_FILE
    path.parent.mkdir(parents=True)
    state = {k: v for k, v in random_inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)  # pytorch-fid's file is a plain state dict without num_batches_tracked
    loaded = load_extractor(None, inception_weights=path)
    assert isinstance(loaded, InceptionFeatures) and loaded.num_features == 2048
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert load_extractor("inception").weights_hash == loaded.weights_hash  # found in the torch hub cache
    for key, value in random_inception.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key
    assert loaded.weights_hash == InceptionFeatures(random_inception).weights_hash
    with torch.no_grad():
        feats = loaded(torch.rand(1, 1, 28, 28))  # gray 28x28 in [0, 1]: repeated to RGB, resized to 299
    assert feats.shape == (1, 2048) and torch.isfinite(feats).all()
    assert loaded.logits(feats).shape == (1, 1008)


def test_inception_missing_or_wrong_weights_fail_clearly(tmp_path) -> None:
    with pytest.raises(ModelFolderError, match="--inception-weights"):
        load_inception(tmp_path / "absent.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ModelFolderError, match="not an FID Inception"):
        load_inception(tmp_path / "wrong.pth")


def test_inception_key_names_match_pytorch_fid(random_inception: FIDInceptionV3) -> None:
    keys = random_inception.state_dict().keys()
    for name in ("Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_var", "Mixed_5b.branch5x5_2.conv.weight",
                 "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7a.branch7x7x3_4.conv.weight",
                 "Mixed_7c.branch3x3dbl_3b.conv.weight", "fc.weight"):
        assert name in keys
    assert sum(p.numel() for p in random_inception.parameters()) == 23_850_960  # torchvision Inception3 without aux, 1008 classes


def test_model_generating_nan_fails_clearly(tiny_gan: ModelBundle, setup: dict) -> None:
    broken = tiny_gan.copy()
    with torch.no_grad():
        next(broken.generator.parameters()).fill_(float("nan"))
    with pytest.raises(ModelFolderError, match="non-finite"):
        evaluate(broken, reference=setup["data"], n=8, extractor=setup["ext"], latency=False)

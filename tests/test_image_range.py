"""Generators whose images are not in [-1, 1]: a sigmoid output ([0, 1]), a linear one (clamped), pixel values.

The contract's ``image_range`` is read off the last operation or given (``--image-range``); every verb works
in [-1, 1] through ``run``, the discriminator is fed images in the model's own range, and exported graphs keep
the model's own outputs. The check: the [0, 1] twin of a DCGAN (same weights, sigmoid(2x) for tanh(x), a
discriminator reading D(2x - 1)) goes through import, Taylor pruning with the adversarial loss, fine-tuning,
distillation, quantization and export exactly like the [-1, 1] original.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from slimgen import api
from slimgen.cli import main
from slimgen.data import ImageSet
from slimgen.distill import Distillation, distill
from slimgen.errors import ConfigError
from slimgen.models import InputSpec, ModelBundle, generate_all, import_model, load_folder, save_folder
from slimgen.prune import ChannelPruning, prune
from slimgen.train.finetune import FineTuning, finetune

GK = {"nz": 8, "channels": 1, "image_size": 28, "widths": [16, 8]}
DK = {"channels": 1, "image_size": 28, "widths": [8, 16]}


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["slimgen", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def _twin(tiny_gan: ModelBundle, tmp_path: Path) -> ModelBundle:
    """``tiny_gan``'s weights imported into its [0, 1] twin classes."""
    g, d = tmp_path / "g.safetensors", tmp_path / "d.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_gan.generator.state_dict().items()}, str(g))
    save_file({k: v.contiguous() for k, v in tiny_gan.parts["discriminator"].state_dict().items()}, str(d))
    return import_model(g, "tests.contract_models:SigmoidDCGAN", kwargs=GK, discriminator=d,
                        discriminator_arch="tests.contract_models:UnitRangeDiscriminator", discriminator_kwargs=DK)


def _same_images(a: ModelBundle, b: ModelBundle, atol: float = 1e-5) -> None:
    z = a.inputs.draw(32, seed=3)
    torch.testing.assert_close(generate_all(a.generator, z), generate_all(b.generator, z), atol=atol, rtol=0)


def test_a_sigmoid_twin_is_read_in_0_1_and_compresses_like_the_original(tiny_gan: ModelBundle, tiny_images: ImageSet,
                                                                       tmp_path: Path) -> None:
    torch.set_num_threads(1)
    twin = _twin(tiny_gan, tmp_path)
    assert twin.inputs == InputSpec((8, 1, 1), image_range=(0.0, 1.0))  # read off the final sigmoid
    raw = twin.generator(*twin.inputs.draw(4).args())
    assert raw.min() >= 0 and raw.max() <= 1  # the module itself is untouched
    _same_images(twin, tiny_gan)

    # Taylor pruning scored by the discriminator: the [0, 1] critic must see [0, 1] images to rank alike
    config = ChannelPruning(ratio=0.5, importance="taylor", loss="adversarial")
    pruned, pruned_twin = prune(tiny_gan, config), prune(twin, config)
    assert [p.shape for p in pruned_twin.generator.parameters()] == [p.shape for p in pruned.generator.parameters()]
    _same_images(pruned_twin, pruned)

    # fine-tuning against the discriminator (real images fed in [0, 1]) with the teacher's L1 term
    tune = FineTuning(epochs=1, steps_per_epoch=3, batch_size=16, teacher_weight=10.0)
    tuned = finetune(pruned, tune, data=tiny_images, teacher=tiny_gan)
    tuned_twin = finetune(pruned_twin, tune, data=tiny_images, teacher=twin)
    _same_images(tuned_twin, tuned, atol=1e-4)

    # distillation with the adversarial term
    dist = Distillation(epochs=1, steps_per_epoch=3, batch_size=16, losses={"output": 10.0, "adversarial": 0.1})
    distilled = distill(pruned, tiny_gan, dist, data=tiny_images)
    distilled_twin = distill(pruned_twin, twin, dist, data=tiny_images)
    _same_images(distilled_twin, distilled, atol=1e-4)

    # the folder keeps the range; int8 weights + activations and the ONNX graph keep the model's own outputs
    save_folder(distilled_twin, tmp_path / "twin")
    loaded = load_folder(tmp_path / "twin")
    assert loaded.inputs.image_range == (0.0, 1.0)
    _same_images(loaded, distilled, atol=1e-4)
    quant = api.Quantization(weights=api.LinearQuant(bits=8), activations=api.ActivationQuant(bits=8, calibration=32))
    q, q_twin = api.quantize(distilled, quant), api.quantize(loaded, quant)
    _same_images(q_twin, q, atol=1e-4)
    from slimgen.export import OnnxGenerator

    api.export_onnx(q_twin, tmp_path / "twin.onnx", int8=False, dequantize=True)
    api.export_onnx(q, tmp_path / "orig.onnx", int8=False, dequantize=True)
    z = q.inputs.draw(8, seed=4).z
    native = OnnxGenerator(tmp_path / "twin.onnx")(z[:, :, None, None])  # the twin's contract: (8, 1, 1) latents
    orig = OnnxGenerator(tmp_path / "orig.onnx")(z)
    assert native.min() >= 0 and native.max() <= 1  # a drop-in replacement of the user's model
    torch.testing.assert_close(native * 2 - 1, orig, atol=1e-4, rtol=0)


def test_cli_import_reads_says_or_takes_the_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from tests.contract_models import HalfTanhGenerator, LinearOutputGenerator, SigmoidDCGAN

    torch.manual_seed(0)
    sig, lin = tmp_path / "sig.safetensors", tmp_path / "lin.safetensors"
    save_file(SigmoidDCGAN(**GK).state_dict(), str(sig))
    save_file(LinearOutputGenerator(nz=8, ngf=4, nc=1).state_dict(), str(lin))

    code, out, err = _cli(monkeypatch, capsys, "import", sig, "--arch", "tests.contract_models:SigmoidDCGAN",
                          "--kwargs", '{"nz": 8, "widths": [16, 8]}', "--out", tmp_path / "a")
    assert code == 0, err
    assert "images in [0, 1]" in out and "sigmoid" in out
    assert load_folder(tmp_path / "a").inputs.image_range == (0.0, 1.0)

    half = tmp_path / "half.safetensors"  # (tanh + 1) / 2: a [0, 1] output the last operation does not tell
    save_file(HalfTanhGenerator(nz=8, ngf=4, nc=1).state_dict(), str(half))
    code, out, err = _cli(monkeypatch, capsys, "import", half, "--arch", "tests.contract_models:HalfTanhGenerator",
                          "--kwargs", '{"nz": 8, "ngf": 4, "nc": 1}', "--out", tmp_path / "h")
    assert code == 0 and "--image-range 0,1" in out, err

    lin_args = ("import", lin, "--arch", "tests.contract_models:LinearOutputGenerator", "--kwargs",
                '{"nz": 8, "ngf": 4, "nc": 1}')
    code, _, err = _cli(monkeypatch, capsys, *lin_args, "--out", tmp_path / "b")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "--image-range" in err, err
    code, out, err = _cli(monkeypatch, capsys, *lin_args, "--image-range", "-1,1", "--out", tmp_path / "b")
    assert code == 0, err
    linear = load_folder(tmp_path / "b")
    images = generate_all(linear.generator, linear.inputs.draw(4))
    assert images.abs().max() <= 1 and (images.abs() == 1).any()  # clamped where the raw output overshoots
    code, out, err = _cli(monkeypatch, capsys, *lin_args, "--image-range", "-40,40.5", "--out", tmp_path / "c")
    assert code == 0 and "images in [-40, 40.5]" in out, err

    for bad in ("1,0", "0,x", "0", "0,inf"):
        code, _, err = _cli(monkeypatch, capsys, *lin_args, "--image-range", bad, "--out", tmp_path / "d")
        assert code != 0 and err.startswith("error: --image-range") and len(err.strip().splitlines()) == 1, err


def test_image_range_in_the_contract() -> None:
    spec = InputSpec((4,), image_range=(0, 255))
    x = torch.tensor([0.0, 127.5, 255.0])
    torch.testing.assert_close(spec.to_unit(x), torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(spec.to_native(spec.to_unit(x)), x)
    assert InputSpec.from_dict(spec.to_dict()) == spec and spec.to_dict()["image_range"] == [0.0, 255.0]
    assert "image_range" not in InputSpec((4,)).to_dict()  # folders written before the field read the same
    assert "images in [0, 255]" in spec.describe()
    for bad in ((1, 0), (0,), (0, float("nan")), "01", (True, 2)):
        with pytest.raises(ConfigError, match="image_range"):
            InputSpec((4,), image_range=bad)  # type: ignore[arg-type]
    np.testing.assert_equal(InputSpec((4,)).to_unit(x).numpy(), x.numpy())  # [-1, 1]: untouched


def test_the_discriminator_of_a_0_1_model_is_pruned_on_0_1_images(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    twin = _twin(tiny_gan, tmp_path)
    with torch.no_grad():
        twin.generator.net[-2].weight.mul_(100)  # images across the range: in [-1, 1] some are below 0
    assert generate_all(twin.generator, twin.inputs.draw(64)).min() < -0.5
    pruned = prune(twin, ChannelPruning(ratio=0.5, importance="activation"), part="discriminator")
    d = pruned.parts["discriminator"]
    assert d(torch.rand(2, 1, 28, 28)).shape == (2,)  # UnitRangeDiscriminator asserts it was fed [0, 1] images

"""``slimgen import`` / ``import_model``: checkpoints of every common form, and one error line for each bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from slimgen.cli import main
from slimgen.errors import ModelFolderError
from slimgen.models import import_model, load_folder
from slimgen.models.importer import infer_latent_shape
from tests.contract_models import ConditionalGenerator, TutorialDiscriminator, TutorialGenerator

ARCH = "tests.contract_models:TutorialGenerator"


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["slimgen", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    return int(info.value.code or 0), capsys.readouterr().err


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "ck.pth"
    torch.save({"epoch": 2, "netG_state_dict": TutorialGenerator(ngf=4).state_dict(),
                "netD_state_dict": TutorialDiscriminator(ndf=4).state_dict()}, path)
    return path


def test_tutorial_checkpoint_with_its_discriminator(checkpoint: Path, tmp_path: Path) -> None:
    bundle = import_model(checkpoint, ARCH, kwargs={"ngf": 4}, key="netG_state_dict", discriminator=checkpoint,
                          discriminator_arch="tests.contract_models:TutorialDiscriminator",
                          discriminator_kwargs={"ndf": 4}, discriminator_key="netD_state_dict")
    assert bundle.inputs is not None and bundle.inputs.latent_shape == (100, 1, 1)  # read off the first ConvT
    assert bundle.image_shape == (3, 64, 64) and set(bundle.parts) == {"generator", "discriminator"}
    want = torch.load(checkpoint, weights_only=True)["netG_state_dict"]
    assert all(torch.equal(v, want[k]) for k, v in bundle.generator.state_dict().items())


def test_latent_shape_inferred_or_given() -> None:
    assert infer_latent_shape(TutorialGenerator(nz=64, ngf=4), None) == (64, 1, 1)
    assert infer_latent_shape(ConditionalGenerator(nz=16, embed=10), 10) == (16,)  # Linear(26) less the embedding
    assert infer_latent_shape(torch.nn.Sequential(torch.nn.Tanh()), None) is None
    from tests.archnets import EqualLinear  # StyleGAN2's mapping: hand-written equalized-lr linears first

    assert infer_latent_shape(torch.nn.Sequential(EqualLinear(48, 32), torch.nn.LeakyReLU()), None) == (48,)


def test_given_latent_shape_that_does_not_fit(checkpoint: Path) -> None:
    with pytest.raises(ModelFolderError, match=r"fails on inputs z ~ N\(0, I\) of shape \(7,\)"):
        import_model(checkpoint, ARCH, kwargs={"ngf": 4}, key="netG_state_dict", latent_shape=(7,))


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_safetensors_with_dataparallel_or_compiled_prefix(prefix: str, tmp_path: Path) -> None:
    g = TutorialGenerator(ngf=4)
    path = tmp_path / "g.safetensors"
    save_file({f"{prefix}{k}": v.contiguous() for k, v in g.state_dict().items()}, str(path))
    bundle = import_model(path, ARCH, kwargs={"ngf": 4})
    assert torch.equal(bundle.generator.main[0].weight, g.main[0].weight)


BAD = {
    "wrong key": (["--key", "generator"], r"no key 'generator'; the checkpoint has: epoch, netG_state_dict, netD_state_dict"),
    "no state dict": ([], r"a checkpoint dict, not a state dict of tensors; pick one with --key \(netG_state_dict, "
                          r"netD_state_dict\)"),
    "kwargs": (["--key", "netG_state_dict", "--kwargs", '{"ngf": 8}'], r"has shape \[100, 32, 4, 4\] in the weights but "
               r"\[100, 64, 4, 4\] in tests.contract_models:TutorialGenerator built with \{'ngf': 8\}: the kwargs do not match"),
    "tuple": (["--key", "netG_state_dict", "--arch", "tests.contract_models:TupleGenerator"], r"returns a tuple, not one "
              r"tensor"),
    "range": (["--key", "netG_state_dict", "--arch", "tests.contract_models:WideRangeGenerator"], r"outputs lie in "
              r"\[\d.*, \d.*\], not in \[-1, 1\]"),
    "bad json": (["--key", "netG_state_dict", "--kwargs", "{ngf: 4}"], r"--kwargs: not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_line(case: str, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import re

    args, pattern = BAD[case]
    base = ["import", checkpoint, "--arch", ARCH, "--kwargs", '{"ngf": 4}', "--out", tmp_path / "out"]
    code, err = _run(monkeypatch, capsys, *base, *args)  # later options win over the defaults above
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_import_then_load_round_trip(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(monkeypatch, capsys, "import", checkpoint, "--arch", ARCH, "--kwargs", '{"ngf": 4}', "--key",
                     "netG_state_dict", "--latent-shape", "100,1,1", "--out", tmp_path / "m")
    assert code == 0, err
    bundle = load_folder(tmp_path / "m")
    assert bundle.inputs is not None and bundle.inputs.latent_shape == (100, 1, 1) and bundle.latent_dim is None
    assert bundle.steps[0]["step"] == "import" and bundle.steps[0]["key"] == "netG_state_dict"


def test_a_flat_latent_lifted_in_forward_is_found(tmp_path: Path) -> None:
    import archnets

    torch.save(archnets.FlatLatentConvG().state_dict(), tmp_path / "g.pt")
    bundle = import_model(tmp_path / "g.pt", "archnets:FlatLatentConvG")  # first layer says (16, 1, 1); forward says (16,)
    assert bundle.inputs.latent_shape == (16,) and bundle.image_shape == (1, 28, 28)
    with pytest.raises(ModelFolderError, match=r"latents of shape \(16, 1, 1\) and \(16,\)"):
        import_model(tmp_path / "g.pt", "archnets:FlatLatentConvG", kwargs={"nz": 16}, latent_shape=None,
                     num_classes=3)  # a wrong contract still fails in one line

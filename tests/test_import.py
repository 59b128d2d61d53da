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


def test_a_conditional_generator_imported_without_num_classes_takes_them_from_its_embedding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """G(z, y) with an nn.Embedding(7, 10) and no --num-classes: unconditional latents fail, so import reads the 7
    classes off the embedding (and the latent 16 off the first Linear's 26 inputs less its 10) and says so."""
    torch.manual_seed(0)
    path = tmp_path / "cg.safetensors"
    save_file(ConditionalGenerator(nz=16, num_classes=7, embed=10, ngf=4).state_dict(), str(path))
    arch = "tests.contract_models:ConditionalGenerator"
    kwargs = '{"num_classes": 7, "ngf": 4}'
    code, _ = _run(monkeypatch, capsys, "import", path, "--arch", arch, "--kwargs", kwargs, "--out", tmp_path / "f")
    bundle = load_folder(tmp_path / "f")
    assert code == 0 and bundle.inputs is not None
    assert (bundle.inputs.latent_shape, bundle.inputs.num_classes) == ((16,), 7)
    assert bundle.steps[-1]["num_classes_from"] == "nn.Embedding label_emb"
    # a latent shape that fits neither way is one line naming both tries
    code, err = _run(monkeypatch, capsys, "import", path, "--arch", arch, "--kwargs", kwargs, "--latent-shape", "5",
                     "--out", tmp_path / "g")
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert "also as G(z, y) with the 7 classes of its nn.Embedding label_emb" in err


@pytest.mark.parametrize(("arch", "latent", "classes", "read_from"), [
    ("LabelMapGenerator", (12,), 5, "nn.Embedding emb"),  # the embedding joins after the reshape: z is fc's width
    ("CondNormGenerator", (10,), 6, "4 nn.Embedding of 6 rows (n1.gamma, ...)"),  # labels only in cond. norms
])
def test_conditional_generators_whose_labels_do_not_join_the_latent_are_imported_without_num_classes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], arch: str,
        latent: tuple[int, ...], classes: int, read_from: str) -> None:
    import tests.contract_models as cm

    torch.manual_seed(0)
    path = tmp_path / "g.safetensors"
    save_file(getattr(cm, arch)().state_dict(), str(path))
    code, err = _run(monkeypatch, capsys, "import", path, "--arch", f"tests.contract_models:{arch}",
                     "--out", tmp_path / "f")
    assert code == 0, err
    bundle = load_folder(tmp_path / "f")
    assert bundle.inputs is not None and (bundle.inputs.latent_shape, bundle.inputs.num_classes) == (latent, classes)
    assert bundle.steps[-1]["num_classes_from"] == read_from
    # given --num-classes, the latent is still the first layer's whole width where less the embedding fails
    code, err = _run(monkeypatch, capsys, "import", path, "--arch", f"tests.contract_models:{arch}",
                     "--num-classes", str(classes), "--out", tmp_path / "g")
    assert code == 0, err
    assert load_folder(tmp_path / "g").inputs.latent_shape == latent


def test_a_fully_convolutional_generator_needs_its_latent_shape_given(tmp_path: Path) -> None:
    """A first layer that keeps its input's size reads latents of any height and width: no (C, 1, 1) guess (it gave
    4x4 images of a generator made for 7x7 latents); given, the import is what was asked for."""
    from tests.contract_models import FullyConvGenerator

    path = tmp_path / "fc.safetensors"
    save_file(FullyConvGenerator().state_dict(), str(path))
    arch = "tests.contract_models:FullyConvGenerator"
    assert infer_latent_shape(FullyConvGenerator(), None) is None
    with pytest.raises(ModelFolderError, match=r"a 3x3 convolution of 4 channels keeping its input's size, takes "
                                               r"latents of any height and width .*give --latent-shape 4,H,W$"):
        import_model(path, arch)
    bundle = import_model(path, arch, latent_shape=(4, 7, 7))
    assert bundle.image_shape == (1, 28, 28)


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
    with pytest.raises(ModelFolderError, match=r"latents of shape \(16, 1, 1\), \(16,\), \(16, 1, 1\) with one-hot "
                       r"labels, \(16,\) with one-hot labels; give the right"):
        import_model(tmp_path / "g.pt", "archnets:FlatLatentConvG", kwargs={"nz": 16}, latent_shape=None,
                     num_classes=3)  # a wrong contract still fails in one line


def test_a_conditional_model_written_for_one_hot_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A cGAN whose G(z, y) and D(x, y) take y one-hot (float (B, K), concatenated): called with slimgen's int64 labels
    it failed at import ("give the right --latent-shape / --num-classes"). Import finds it (the first Linear reads
    nz + K: the latent is nz) and records ``labels: one_hot``; the folder's parts convert the indices themselves, so
    sampling, channel pruning (through the traced graph), save/load and ONNX take indices and give the user's images."""
    import onnxruntime as ort
    import torch.nn.functional as F

    from slimgen.export.onnx import export_fp32
    from slimgen.models import save_folder
    from slimgen.models.inputs import run
    from slimgen.prune import ChannelPruning, prune
    from tests.contract_models import OneHotDiscriminator, OneHotGenerator

    torch.manual_seed(0)
    g, d = OneHotGenerator().eval(), OneHotDiscriminator()
    save_file(g.state_dict(), tmp_path / "g.safetensors")
    save_file(d.state_dict(), tmp_path / "d.safetensors")
    code, err = _run(monkeypatch, capsys, "import", tmp_path / "g.safetensors", "--arch",
                     "tests.contract_models:OneHotGenerator", "--num-classes", "4", "--discriminator",
                     tmp_path / "d.safetensors", "--discriminator-arch", "tests.contract_models:OneHotDiscriminator",
                     "--out", tmp_path / "imp")
    assert code == 0, err
    bundle = load_folder(tmp_path / "imp", trust_code=("tests.contract_models:*",))
    spec = bundle.inputs
    assert spec is not None and spec.latent_shape == (16,) and spec.labels == "one_hot" and spec.num_classes == 4
    inputs = spec.draw(5, seed=3)
    with torch.no_grad():
        want = g(inputs.z, F.one_hot(inputs.y, 4).float())
        torch.testing.assert_close(run(bundle.generator, inputs), want)
        assert bundle.discriminator(want, inputs.y).shape == (5, 1)
    small = prune(bundle, ChannelPruning(ratio=0.5))
    with torch.no_grad():
        out = small.generator(*inputs.args())
    assert out.shape == want.shape and small.generator.get_submodule("conv.0").out_channels == 8
    back = load_folder(save_folder(small, tmp_path / "p"), trust_code=("tests.contract_models:*",))
    with torch.no_grad():
        torch.testing.assert_close(back.generator(*inputs.args()), out)
    session = ort.InferenceSession(str(export_fp32(back.generator, tmp_path / "g.onnx", spec)))
    got = session.run(None, {"z": inputs.z.numpy(), "y": inputs.y.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), out, atol=1e-5, rtol=1e-4)
    from slimgen.export.torchscript import export_torchscript

    scripted = torch.jit.load(str(export_torchscript(back, tmp_path / "g.pt")))
    with torch.no_grad():
        torch.testing.assert_close(scripted(*inputs.args()), out, atol=1e-5, rtol=1e-4)
    code, err = _run(monkeypatch, capsys, "import", tmp_path / "g.safetensors", "--arch",
                     "tests.contract_models:OneHotGenerator", "--num-classes", "4", "--labels", "index",
                     "--out", tmp_path / "bad")
    assert code != 0 and "fails on inputs" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("flags", "message"), [
    (["--labels", "one-hot"], "--labels one-hot needs --num-classes"),
    (["--num-classes", "4", "--labels", "onehot"], "labels must be one of index, one_hot, got 'onehot'"),
])
def test_bad_labels_flags_are_one_line(flags: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tests.contract_models import OneHotGenerator

    save_file(OneHotGenerator().state_dict(), tmp_path / "g.safetensors")
    code, err = _run(monkeypatch, capsys, "import", tmp_path / "g.safetensors", "--arch",
                     "tests.contract_models:OneHotGenerator", *flags, "--out", tmp_path / "x")
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    from slimgen.errors import ConfigError
    from slimgen.models.inputs import InputSpec

    with pytest.raises(ConfigError, match="labels one_hot needs num_classes"):
        InputSpec.from_dict({"latent_shape": [8], "labels": "one_hot"})

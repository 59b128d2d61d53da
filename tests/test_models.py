"""Zoo architectures, model folders (round trip, atomicity, errors) and pickle refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from slimgen.errors import ModelFolderError
from slimgen.models import (
    DCGANDiscriminator,
    DCGANGenerator,
    ImageClassifier,
    ModelBundle,
    VAEDecoder,
    VAEEncoder,
    import_checkpoint,
    load_folder,
    sample_latents,
    save_folder,
)
from slimgen.models.zoo import zoo_names


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3), (64, 1)])
def test_dcgan_shapes(size: int, channels: int) -> None:
    g = DCGANGenerator(nz=10, channels=channels, image_size=size)
    d = DCGANDiscriminator(channels=channels, image_size=size)
    x = g(torch.randn(2, 10))
    assert x.shape == (2, channels, size, size)
    assert d(x).shape == (2,)
    assert g(torch.randn(2, 10, 1, 1)).shape == x.shape  # (B, nz, 1, 1) latents too


def test_dcgan_widths_change_size() -> None:
    slim = DCGANGenerator(widths=[32, 16])
    assert slim.net[0].out_channels == 32 and slim.net[3].out_channels == 16
    with pytest.raises(ValueError, match="needs 2 widths"):
        DCGANGenerator(image_size=28, widths=[8, 8, 8])


def _bundles() -> dict[str, ModelBundle]:
    torch.manual_seed(0)
    gk, dk = {"nz": 8, "widths": [16, 8]}, {"widths": [8, 16]}
    vk = {"nz": 4}
    return {
        "gan": ModelBundle.from_modules("gan", {"generator": DCGANGenerator(**gk), "discriminator": DCGANDiscriminator(**dk)},
                                        {"generator": gk, "discriminator": dk}, latent_dim=8),
        "gan32rgb": ModelBundle.from_modules("gan", {"generator": DCGANGenerator(nz=8, channels=3, image_size=32)},
                                             {"generator": {"nz": 8, "channels": 3, "image_size": 32}}, latent_dim=8,
                                             image_shape=(3, 32, 32)),
        "vae": ModelBundle.from_modules("vae", {"generator": VAEDecoder(**vk), "encoder": VAEEncoder(**vk)},
                                        {"generator": vk, "encoder": vk}, latent_dim=4),
        "classifier": ModelBundle.from_modules("classifier", {"classifier": ImageClassifier()}, {"classifier": {}}),
    }


@pytest.mark.parametrize("name", list(_bundles()))
def test_round_trip_identical_outputs(name: str, tmp_path: Path) -> None:
    bundle = _bundles()[name]
    for m in bundle.parts.values():  # non-trivial BatchNorm statistics
        m.train()
    c, h, w = bundle.image_shape
    x = torch.rand(4, c, h, w) * 2 - 1
    with torch.no_grad():
        for pname, m in bundle.parts.items():
            m(sample_latents(4, bundle.latent_dim) if pname == "generator" else x)
            m.eval()
    save_folder(bundle, tmp_path / "m")
    loaded = load_folder(tmp_path / "m")
    assert set(loaded.parts) == set(bundle.parts)
    with torch.no_grad():
        for pname, m in bundle.parts.items():
            inp = sample_latents(4, bundle.latent_dim, seed=3) if pname == "generator" else x
            a, b = m(inp), loaded.parts[pname](inp)
            for ta, tb in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
                assert torch.equal(ta, tb)


@pytest.mark.parametrize("name", zoo_names())
def test_shipped_zoo_models_load_and_run(name: str) -> None:
    bundle = load_folder(f"zoo:{name}")
    assert (bundle.path / "card.md").read_text().strip()
    if bundle.latent_dim:
        x = bundle.generator(sample_latents(2, bundle.latent_dim))
        assert x.shape == (2, *bundle.image_shape)
        assert float(x.detach().abs().max()) <= 1.0


def test_same_seed_same_latents() -> None:
    assert torch.equal(sample_latents(5, 8, seed=1), sample_latents(5, 8, seed=1))
    assert not torch.equal(sample_latents(5, 8, seed=1), sample_latents(5, 8, seed=2))


def test_mismatched_weights_name_the_tensor(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    save_folder(tiny_gan, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["parts"]["generator"]["kwargs"]["widths"] = [32, 8]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match=r"'generator\.net\.0\.weight' has shape \[8, 16, 7, 7\] .* but \[8, 32, 7, 7\]"):
        load_folder(tmp_path / "m")


def test_missing_and_extra_tensors(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    folder = save_folder(tiny_gan, tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    state.pop("generator.net.1.running_mean")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelFolderError, match=r"lack tensor 'generator\.net\.1\.running_mean'"):
        load_folder(folder)


def test_truncated_weights_file(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    folder = save_folder(tiny_gan, tmp_path / "m")
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ModelFolderError, match="corrupt or truncated safetensors"):
        load_folder(folder)


def test_not_a_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="no such model folder"):
        load_folder(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match=r"no config\.json"):
        load_folder(tmp_path / "empty")
    with pytest.raises(ModelFolderError, match="no such shipped model"):
        load_folder("zoo:does-not-exist")


def test_save_is_atomic_no_temp_files_left(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    save_folder(tiny_gan, tmp_path / "m")
    save_folder(tiny_gan, tmp_path / "m")  # overwrite in place
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_is_refused_unless_trusted(tmp_path: Path) -> None:
    g = DCGANGenerator(nz=8, widths=[16, 8])
    plain = tmp_path / "plain.pt"
    torch.save(g.state_dict(), plain)
    bundle = import_checkpoint(plain, "dcgan_generator", {"nz": 8, "widths": [16, 8]}, latent_dim=8,
                               image_shape=(1, 28, 28))
    z = sample_latents(2, 8)
    g.eval()
    assert torch.equal(bundle.generator(z), g(z))
    evil = tmp_path / "evil.pt"
    torch.save({"state": g.state_dict(), "payload": _Evil()}, evil)
    with pytest.raises(ModelFolderError, match="refused to unpickle"):
        import_checkpoint(evil, "dcgan_generator", {"nz": 8, "widths": [16, 8]}, latent_dim=8, image_shape=(1, 28, 28))


def test_user_module_by_import_path(tmp_path: Path) -> None:
    bundle = ModelBundle.from_modules("gan", {"generator": torch.nn.Sequential(torch.nn.Linear(4, 784))},
                                      {"generator": {}}, latent_dim=4)
    assert bundle.specs["generator"].arch == "torch.nn.modules.container:Sequential"
    from slimgen.models import resolve

    with pytest.raises(ModelFolderError, match="never imports code a model folder names"):
        resolve("no_such_module_xyz:Gen")  # not chosen by the user: nothing is imported
    with pytest.raises(ModelFolderError, match="cannot import module"):
        resolve("no_such_module_xyz:Gen", trust_code=["no_such_module_xyz:Gen"])


def test_written_files_get_normal_permissions(tiny_gan: ModelBundle, tmp_path: Path) -> None:
    import os

    folder = save_folder(tiny_gan, tmp_path / "m")
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "model.safetensors"):
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_copy_works_with_prune_masks_attached(tiny_gan: ModelBundle) -> None:
    from torch.nn.utils import prune as torch_prune

    layer = tiny_gan.generator.net[0]
    torch_prune.l1_unstructured(layer, "weight", amount=0.5)
    twin = tiny_gan.copy()
    z = sample_latents(3, 8)
    assert torch.equal(twin.generator(z), tiny_gan.generator(z))
    twin_layer = twin.generator.net[0]
    assert twin_layer.weight_mask is not layer.weight_mask and torch.equal(twin_layer.weight_mask, layer.weight_mask)
    with torch.no_grad():
        twin_layer.weight_orig.add_(1.0)
    assert not torch.equal(twin.generator(z), tiny_gan.generator(z))  # nothing shared

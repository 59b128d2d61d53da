"""The generator contract: InputSpec draws inputs of any latent shape, labels, truncation; run() calls G."""

import copy

import pytest
import torch
from torch import nn

from slimgen.errors import ConfigError
from slimgen.models import GenInputs, InputSpec, generate_all, inputs_of, run, set_inputs


@pytest.mark.parametrize("shape", [(8,), (8, 1, 1), (4, 3, 3)])
def test_draw_any_rank_is_seeded(shape):
    spec = InputSpec(shape)
    a, b, c = spec.draw(5, seed=1), spec.draw(5, seed=1), spec.draw(5, seed=2)
    assert a.z.shape == (5, *shape) and a.y is None
    assert torch.equal(a.z, b.z) and not torch.equal(a.z, c.z)


def test_labels_drawn_or_fixed():
    spec = InputSpec((4,), num_classes=3)
    drawn = spec.draw(200, seed=0)
    assert drawn.y.dtype == torch.long and set(drawn.y.tolist()) == {0, 1, 2}
    assert drawn.y.tolist() == spec.draw(200, seed=0).y.tolist()
    assert (spec.draw(7, classes=2).y == 2).all()
    with pytest.raises(ConfigError, match=r"\[0, 3\)"):
        spec.draw(2, classes=3)
    with pytest.raises(ConfigError, match="not class-conditional"):
        InputSpec((4,)).draw(2, classes=1)


def test_truncation_and_uniform_bounds():
    z = InputSpec((64,), truncation=0.5).draw(100).z
    assert z.abs().max() <= 0.5 and z.std() > 0.2
    u = InputSpec((64,), distribution="uniform").draw(100).z
    assert u.min() >= -1 and u.max() <= 1


@pytest.mark.parametrize("bad", [
    {"latent_shape": []}, {"latent_shape": [0]}, {"latent_shape": "100"}, {"latent_shape": [2.5]},
    {"latent_shape": [4], "distribution": "cauchy"}, {"latent_shape": [4], "truncation": -1},
    {"latent_shape": [4], "num_classes": 0}, {"latent_shape": [4], "colour": 1}, {},
    {"latent_shape": [4], "distribution": "uniform", "truncation": 1.0},
])
def test_bad_specs_raise_config_error(bad):
    with pytest.raises(ConfigError):
        InputSpec.from_dict(bad)


def test_dict_round_trip():
    spec = InputSpec((100, 1, 1), truncation=2.0, num_classes=10)
    assert InputSpec.from_dict(spec.to_dict()) == spec


class _Cond(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(3, 4)
        self.lin = nn.Linear(8, 12)

    def forward(self, z, y):
        return torch.tanh(self.lin(torch.cat([z.flatten(1), self.emb(y)], 1))).view(-1, 3, 2, 2)


def test_run_and_generate_pass_labels_and_spec_travels():
    g = set_inputs(_Cond(), InputSpec((4, 1, 1), num_classes=3))
    inputs = inputs_of(g).draw(10, seed=0)
    out = run(g, inputs)
    assert out.shape == (10, 3, 2, 2)
    assert torch.allclose(generate_all(g, inputs, batch_size=3), out.clamp(-1, 1))
    assert inputs_of(copy.deepcopy(g)) == inputs_of(g)
    assert len(GenInputs.cat([inputs[:4], inputs[4:]])) == 10
    with pytest.raises(ConfigError, match="no input contract"):
        inputs_of(nn.Linear(2, 2))


class _Conv4d(nn.Module):
    def __init__(self, nz: int = 6):
        super().__init__()
        self.net = nn.Sequential(nn.ConvTranspose2d(nz, 2, 4), nn.Tanh())

    def forward(self, z):
        return self.net(z)


def test_folder_round_trip_keeps_the_contract(tmp_path, monkeypatch):
    from slimgen.models import ModelBundle, load_folder, save_folder

    monkeypatch.setitem(__import__("slimgen.models.registry", fromlist=["x"]).ARCHITECTURES, "t_conv4d", _Conv4d)
    spec = InputSpec((6, 1, 1), truncation=1.5)
    bundle = ModelBundle.from_modules("gan", {"generator": _Conv4d()}, {}, inputs=spec, image_shape=(2, 4, 4))
    assert bundle.latent_dim is None and inputs_of(bundle.generator) == spec
    save_folder(bundle, tmp_path / "m")
    loaded = load_folder(tmp_path / "m")
    assert loaded.inputs == spec and inputs_of(loaded.generator) == spec
    x = spec.draw(3, seed=4)
    assert torch.equal(run(loaded.generator, x), run(bundle.generator.eval(), x))


def test_old_folders_get_the_classic_latent():
    from slimgen.models import load_folder

    teacher = load_folder("zoo:dcgan-fmnist")
    assert teacher.inputs == InputSpec((64,)) and inputs_of(teacher.generator).latent_shape == (64,)

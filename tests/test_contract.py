"""The input contract through every verb, on generators written elsewhere (issue 14 items 1, 2, 5, 6).

Each real-world shape goes the CLI path a user takes: import -> sample -> prune channels 50%
(data-free Taylor importance: no discriminator, no data) -> distill data-free (a few steps) ->
quantize int8 weights + activations -> export int8 ONNX (run in ONNX Runtime with the recorded
input names and shapes, compared with the quantized PyTorch model) -> quality against the teacher.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from slimgen.cli import main
from slimgen.evaluate.cost import count_macs
from slimgen.evaluate.fidelity import measure_fidelity
from slimgen.export import OnnxGenerator
from slimgen.models import GenInputs, InputSpec, generate_all, load_folder
from tests.contract_models import ConditionalGenerator, TutorialGenerator

# int8 weights and activations (QDQ in ONNX Runtime) vs the PyTorch model with the same int8 weights and
# float activations, on 16 fresh inputs: images in [-1, 1] (peak-to-peak 2). Random-weight networks
# calibrated on 64 inputs; the shipped teacher gets 36.9 dB (bench/results/quantize.md).
ONNX_PSNR_DB = 25.0
# Random-weight generators draw low-contrast images (std 0.01-0.04), which inflates PSNR: the error must also be
# small next to the images' own spread (measured 0.015 for the tutorial shape, 0.085 for the conditional one).
ONNX_REL_RMSE = 0.25


def _relative_rmse(got: torch.Tensor, ref: torch.Tensor) -> float:
    """RMS error of ``got`` against ``ref`` (N, C, H, W) over the standard deviation of ``ref``."""
    return float((got - ref).pow(2).mean().sqrt() / ref.std())


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``slimgen ARGS`` in this process through the real entry point; (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["slimgen", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _warm_batchnorm(g: torch.nn.Module, inputs: GenInputs) -> None:
    """A few train-mode forwards so BatchNorm has the running statistics a trained model has."""
    g.train()
    with torch.no_grad():
        for batch in inputs.split(16):
            g(*batch.args())
    g.eval()


def _tutorial_checkpoint(tmp: Path) -> Path:
    """The tutorial's training-loop checkpoint: a dict with netG_state_dict (and optimizer state, epoch)."""
    torch.manual_seed(0)
    g = TutorialGenerator(ngf=8)
    _warm_batchnorm(g, InputSpec((100, 1, 1)).draw(64, seed=5))
    opt = torch.optim.Adam(g.parameters(), lr=2e-4)
    path = tmp / "dcgan.pth"
    torch.save({"epoch": 5, "netG_state_dict": g.state_dict(), "optimizerG_state_dict": opt.state_dict(),
                "loss_G": 1.23}, path)
    return path


def _conditional_weights(tmp: Path) -> Path:
    torch.manual_seed(1)
    g = ConditionalGenerator(nz=16, num_classes=10, embed=10, ngf=8)
    _warm_batchnorm(g, InputSpec((16,), num_classes=10).draw(64, seed=5))
    path = tmp / "cgan.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in g.state_dict().items()}, str(path))  # saved from DataParallel
    return path


CASES = {
    "dcgan-tutorial": dict(
        weights=_tutorial_checkpoint, arch="tests.contract_models:TutorialGenerator", kwargs={"ngf": 8},
        extra=["--key", "netG_state_dict"], inputs=InputSpec((100, 1, 1)), image=(3, 64, 64)),
    "conditional": dict(
        weights=_conditional_weights, arch="tests.contract_models:ConditionalGenerator", kwargs={"ngf": 8},
        extra=["--num-classes", "10"], inputs=InputSpec((16,), num_classes=10), image=(1, 32, 32)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_path_import_to_export(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    c = CASES[case]
    weights = c["weights"](tmp_path)
    imp, pruned, dist, quant, onnx = (tmp_path / n for n in ("imported", "p50", "distilled", "q8", "q8.onnx"))

    # import: the latent shape is read off the first layer; the image shape is probed
    code, out, err = cli(monkeypatch, capsys, "import", weights, "--arch", c["arch"], "--kwargs", json.dumps(c["kwargs"]),
                         *c["extra"], "--out", imp)
    assert code == 0, err
    assert f"of shape {c['inputs'].latent_shape}" in out  # what it inferred, said on the way
    config = json.loads((imp / "config.json").read_text())
    assert config["inputs"] == c["inputs"].to_dict()
    assert tuple(config["image_shape"]) == c["image"]
    teacher = load_folder(imp)

    # sample: (N, C, H, W) uint8 from the contract's inputs; --class for the conditional model
    class_args = ["--class", "3"] if c["inputs"].conditional else []
    code, _, err = cli(monkeypatch, capsys, "sample", imp, "-n", "6", "--out", tmp_path / "s.npy", *class_args)
    assert code == 0, err
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (6, *c["image"]) and images.dtype == np.uint8
    if c["inputs"].conditional:  # the label reaches the model: another class draws other images
        cli(monkeypatch, capsys, "sample", imp, "-n", "6", "--out", tmp_path / "s4.npy", "--class", "4")
        assert not np.array_equal(images, np.load(tmp_path / "s4.npy"))

    # prune channels 50%, Taylor importance: no discriminator, so from the generator's own outputs
    code, _, err = cli(monkeypatch, capsys, "prune", imp, "--method", "channels", "--ratio", "0.5",
                       "--importance", "taylor", "--out", pruned)
    assert code == 0, err
    assert err.count("no discriminator") == 1 and "output_norm" in err
    p = load_folder(pruned)
    step = p.steps[-1]
    assert step["loss_used"] == "output_norm" and step["calibration"] == {"n": 256, "seed": 1234}
    x = c["inputs"].draw(2, seed=0)
    macs_t, macs_p = count_macs(teacher.generator, x), count_macs(p.generator, x)
    assert macs_p < 0.4 * macs_t  # half the channels of both sides of most layers: about a quarter of the MACs

    # distill data-free: no --dataset, no discriminator; says so once; keeps the last epoch (no reference data)
    code, _, err = cli(monkeypatch, capsys, "distill", imp, "--student", pruned, "--epochs", "1", "--steps-per-epoch",
                       "4", "--batch-size", "8", "--threads", "1", "--out", dist)
    assert code == 0, err
    assert err.count("data-free") == 1
    d = load_folder(dist)
    assert d.steps[-1]["data"].startswith("none (data-free")
    assert d.inputs == c["inputs"]
    moved = [k for k, v in d.generator.state_dict().items() if not torch.equal(v, p.generator.state_dict()[k])]
    assert moved  # the student trained

    # quantize int8 weights + activations; the calibration contract (n, seed) is recorded
    code, _, err = cli(monkeypatch, capsys, "quantize", dist, "--weights", "int8", "--activations", "int8",
                       "--calibration", "64", "--out", quant)
    assert code == 0, err
    q = load_folder(quant)
    assert q.meta["activation_quant"]["calibration"] == 64 and q.meta["activation_quant"]["calibration_seed"] == 1234

    # export int8 ONNX; it runs in ONNX Runtime alone with the recorded input names and shapes
    code, _, err = cli(monkeypatch, capsys, "export", quant, "--format", "onnx", "--int8", "--out", onnx)
    assert code == 0, err
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    names = [(i.name, i.type) for i in session.get_inputs()]
    expected = [("z", "tensor(float)")] + ([("y", "tensor(int64)")] if c["inputs"].conditional else [])
    assert names == expected
    assert session.get_inputs()[0].shape[1:] == list(c["inputs"].latent_shape)
    fresh = q.inputs.draw(16, seed=42)
    got = OnnxGenerator(onnx)(*fresh.args())  # (16, C, H, W)
    ref = generate_all(q.generator, fresh)
    assert got.shape == (16, *c["image"])
    assert measure_fidelity(got.clamp(-1, 1), ref).psnr > ONNX_PSNR_DB
    assert _relative_rmse(got, ref) < ONNX_REL_RMSE
    assert "QLinearConv" in {n.op_type for n in __import__("onnx").load(str(onnx)).graph.node} or \
        "DequantizeLinear" in {n.op_type for n in __import__("onnx").load(str(onnx)).graph.node}

    # quality against the teacher's own samples (no data of this image shape): FID/KID/PR with its noise floor,
    # fidelity on the same inputs; the int8-activation folder runs as it runs (its int8 graph)
    code, out, err = cli(monkeypatch, capsys, "evaluate", quant, "--teacher", imp, "--reference", "teacher",
                         "-n", "64", "--no-latency")
    assert code == 0, err
    m = json.loads((Path(quant) / "metrics.json").read_text())
    assert m["reference_kind"] == "teacher" and m["n"] == 64 and m["extractor_role"] == "reporting"
    assert m["fid"] > 0 and m["noise_fid"] is not None and m["noise_fid"] >= 0
    assert "int8" in m["runtime"]
    assert 0 < m["psnr"] < 100  # compressed: close to, not equal to, the teacher


def test_recorded_calibration_reaches_export(tmp_path: Path) -> None:
    """One calibration contract: export without explicit inputs calibrates on what quantize recorded."""
    from slimgen.models.inputs import CALIBRATION_SEED, calibration_inputs
    from slimgen.quantize.apply import check_calibration

    spec = InputSpec((100, 1, 1))
    drawn = check_calibration(None, spec, 32)
    again = calibration_inputs(spec, 32)
    assert torch.equal(drawn.z, again.z) and torch.equal(drawn.z, spec.draw(32, seed=CALIBRATION_SEED).z)
    cond = InputSpec((16,), num_classes=10)
    a, b = calibration_inputs(cond, 8), calibration_inputs(cond, 8)
    assert a.y is not None and torch.equal(a.y, b.y)  # labels too


def test_python_api_on_a_plain_module(tmp_path: Path) -> None:
    """prune -> distill -> quantize -> save -> load -> export on a user's nn.Module; the state travels with it."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    G = TutorialGenerator(ngf=8)
    _warm_batchnorm(G, InputSpec((100, 1, 1)).draw(64, seed=5))
    # --- the README's lines -------------------------------------------------------------------------------------
    from slimgen.distill import Distillation, distill
    from slimgen.export import export_onnx
    from slimgen.models import load_pretrained, save_pretrained, set_inputs
    from slimgen.prune import ChannelPruning, prune
    from slimgen.quantize import ActivationQuant, quantize

    set_inputs(G, InputSpec(latent_shape=(100, 1, 1)))                        # the input contract travels with G
    small = prune(G, ChannelPruning(ratio=0.5, importance="taylor"))          # calibration drawn from the contract
    small = distill(small, G, Distillation(epochs=1, steps_per_epoch=3, batch_size=8))  # data-free: G's outputs
    small = quantize(small, ActivationQuant(calibration=32))                  # int8 weights + activation settings
    save_pretrained(small, tmp_path / "out", kwargs={"ngf": 8})
    onnx = export_onnx(load_pretrained(tmp_path / "out"), tmp_path / "out" / "model.onnx", int8=True)
    # ------------------------------------------------------------------------------------------------------------
    from slimgen.models import state_of

    state = state_of(small)
    assert [s["step"] for s in state.steps] == ["prune", "distill", "quantize"]
    assert state.activation_quant is not None and state.activation_quant["calibration"] == 32
    assert state.encodings and all(e.codec == "linear" for e in state.encodings.values())
    assert state_of(G).steps == []  # the input module is untouched
    loaded = load_pretrained(tmp_path / "out")
    assert state_of(loaded).encodings == state.encodings and state_of(loaded).activation_quant == state.activation_quant
    x = InputSpec((100, 1, 1)).draw(4, seed=9)
    assert torch.allclose(generate_all(loaded, x), generate_all(small, x), atol=1e-6)  # save/load: same model
    stored = json.loads((tmp_path / "out" / "config.json").read_text())
    assert stored["inputs"]["latent_shape"] == [100, 1, 1] and stored["tensors"]  # packed int8 on disk
    got = OnnxGenerator(onnx)(x.z)
    assert measure_fidelity(got.clamp(-1, 1), generate_all(small, x)).psnr > ONNX_PSNR_DB
    assert _relative_rmse(got, generate_all(small, x)) < ONNX_REL_RMSE

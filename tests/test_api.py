"""The README's Python API lines, run exactly as written on a user's own (small, random-weight) generator."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

README = Path(__file__).parents[1] / "README.md"


class MyGenerator(nn.Module):
    """A user's generator: z (B, 100, 1, 1) -> (B, 1, 28, 28) in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(100, 16, 7, 1, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),  # (B, 16, 7, 7)
            nn.ConvTranspose2d(16, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(True),  # (B, 8, 14, 14)
            nn.ConvTranspose2d(8, 1, 4, 2, 1, bias=False), nn.Tanh(),  # (B, 1, 28, 28)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def readme_api_lines() -> list[str]:
    """The code lines of the README block marked ``python-api``."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- python-api[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert block is not None, "README lost its python-api block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_python_api_runs_on_a_users_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = readme_api_lines()
    assert 8 <= len(lines) <= 10
    for verb in ("sg.prune(", "sg.distill(", "sg.quantize(", "sg.save_pretrained(", "sg.export_onnx("):
        assert any(verb in line for line in lines), verb
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"MyGenerator": MyGenerator}
    exec(compile("\n".join(lines), str(README), "exec"), namespace)

    import slimgen.api as sg
    from slimgen.evaluate.cost import count_macs

    G, small = namespace["G"], namespace["small"]
    z = sg.InputSpec(latent_shape=(100, 1, 1)).draw(4, seed=0).z
    assert count_macs(small, z) < 0.5 * count_macs(G, z)  # half the channels: about a quarter of the MACs
    assert [s["step"] for s in sg.state_of(small).steps] == ["prune", "distill", "quantize"]
    sg.trust_code("tests.test_api:MyGenerator")
    loaded = sg.load_pretrained(tmp_path / "out")
    with torch.no_grad():
        assert torch.allclose(loaded(z), small(z), atol=1e-5)  # the folder round trip
    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # int8, as quantized

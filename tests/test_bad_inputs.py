"""The bad-input corpus: every kind of broken, hostile or mistaken input ends in the CLI contract.

Each case asserts: exit status 2, exactly one line starting with ``error:``, no traceback, and
nothing changed on disk that should not be (inputs untouched, no partial output). Cases run
in-process through :func:`slimgen.cli.main`; only what needs a process of its own (sys.path of
``python -m``, a memory limit, SIGKILL, a mounted file system) uses a subprocess.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from slimgen.cli import main
from slimgen.models import DCGANDiscriminator, DCGANGenerator, ModelBundle, registry, save_folder
from slimgen.models.zoo import ZOO_DIR

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# ---------------------------------------------------------------------------------------------
# helpers


def cli(*args: str | Path) -> tuple[int, str]:
    """Run ``slimgen ARGS`` in this process; -> (exit status, stdout + stderr)."""
    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, buf.getvalue()


def assert_refused(code: int, output: str, *, contains: str | None = None) -> None:
    """The contract: exit 2, exactly one ``error:`` line, no traceback."""
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2, output
    assert len(errors) == 1, output
    assert "Traceback" not in output, output
    if contains is not None:
        assert contains in errors[0], errors[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones included) -> sha256 of its bytes; folders -> 'dir'."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _bundle(sparsity_tag: float = 0.0, seed: int = 0) -> ModelBundle:
    torch.manual_seed(seed)
    gk = {"nz": 8, "channels": 1, "image_size": 28, "widths": [16, 8]}
    dk = {"channels": 1, "image_size": 28, "widths": [8, 16]}
    g, d = DCGANGenerator(**gk).eval(), DCGANDiscriminator(**dk).eval()
    return ModelBundle.from_modules("gan", {"generator": g, "discriminator": d}, {"generator": gk, "discriminator": dk},
                                    latent_dim=8, image_shape=(1, 28, 28), meta={"tag": sparsity_tag})


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid small model folder (never modified by a test: copy it first)."""
    return save_folder(_bundle(), tmp_path_factory.mktemp("good") / "model")


@pytest.fixture
def work(tmp_path: Path, good: Path) -> Path:
    """A fresh copy of the good folder in this test's tmp_path (tmp_path / 'model')."""
    shutil.copytree(good, tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture(autouse=True)
def _no_trust_leak() -> Any:
    yield
    registry._TRUSTED.clear()


def _edit_config(folder: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    result = edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg if result is None else result))


# ---------------------------------------------------------------------------------------------
# config.json: one schema, one line naming the field


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(cfg: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(cfg: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = cfg
        for p in parents:
            node = node[p]
        del node[last]
    return edit


def _linear_without_params(cfg: dict[str, Any]) -> None:
    cfg["tensors"]["generator.net.0.weight"] = {"codec": "linear", "shape": [8, 16, 7, 7]}


CONFIG_CASES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "part without arch": _drop("parts/generator/arch"),
    "string latent_dim": _set("latent_dim", "8"),
    "latent_dim 0": _set("latent_dim", 0),
    "latent_dim bool": _set("latent_dim", True),
    "latent_dim negative": _set("latent_dim", -3),
    "kwargs a list": _set("parts/generator/kwargs", [8, 1]),
    "kwargs a string": _set("parts/generator/kwargs", "nz=8"),
    "kwargs unknown argument": _set("parts/generator/kwargs/bogus", 1),
    "kwargs wrong type": _set("parts/generator/kwargs/widths", "wide"),
    "kwargs negative size": _set("parts/generator/kwargs/nz", -5),
    "kwargs zero size": _set("parts/generator/kwargs/widths", [0, 8]),
    "kwargs huge model": _set("parts/generator/kwargs/widths", [1_000_000, 1_000_000]),
    "parts null": _set("parts", None),
    "parts empty": _set("parts", {}),
    "parts a list": _set("parts", [{"arch": "dcgan_generator"}]),
    "part a string": _set("parts/generator", "dcgan_generator"),
    "arch ':Gen'": _set("parts/generator/arch", ":Gen"),
    "arch 'module:'": _set("parts/generator/arch", "evil:"),
    "arch a number": _set("parts/generator/arch", 123),
    "arch with spaces": _set("parts/generator/arch", "os; rm -rf:Gen"),
    "arch unknown name": _set("parts/generator/arch", "resnet50"),
    "arch not a module": _set("parts/generator/arch", "os:system"),
    "arch class missing": _set("parts/generator/arch", "torch.nn:NoSuchLayer"),
    "shape for a missing layer": _set("parts/generator/shapes", {"net.99.weight": [4, 4]}),
    "shape for a missing attribute": _set("parts/generator/shapes", {"net.0.bogus": [4]}),
    "negative shape": _set("parts/generator/shapes", {"net.0.weight": [-8, 16, 7, 7]}),
    "shape a string": _set("parts/generator/shapes", {"net.0.weight": "8x16"}),
    "shapes a list": _set("parts/generator/shapes", [[8, 16]]),
    "huge shape override": _set("parts/generator/shapes", {"net.0.weight": [100_000, 100_000, 7, 7]}),
    "codec without its fields": _linear_without_params,
    "codec unknown": _set("tensors/generator.net.0.weight", {"codec": "zip", "shape": [1]}),
    "codec shape negative": _set("tensors/generator.net.0.weight", {"codec": "dense", "shape": [-1]}),
    "codec params a list": _set("tensors/generator.net.0.weight", {"codec": "linear", "shape": [1], "params": [8]}),
    "tensor entry for no part": _set("tensors/ghost.weight", {"codec": "dense", "shape": [1]}),
    "tensors a list": _set("tensors", ["generator.net.0.weight"]),
    "tensor entry a string": _set("tensors/generator.net.0.weight", "int8"),
    "kind unknown": _set("kind", "diffusion"),
    "kind missing": _drop("kind"),
    "format_version string": _set("format_version", "1"),
    "format_version newer": _set("format_version", 2),
    "format_version missing": _drop("format_version"),
    "image_shape two values": _set("image_shape", [28, 28]),
    "image_shape a string": _set("image_shape", "1x28x28"),
    "image_shape zero": _set("image_shape", [1, 0, 28]),
    "image_shape huge": _set("image_shape", [3, 100_000, 100_000]),
    "latent_dim huge": _set("latent_dim", 10**12),
    "latent shape huge": _set("inputs", {"latent_shape": [100_000, 100_000]}),
    "steps a mapping": _set("steps", {"prune": 1}),
    "steps of strings": _set("steps", ["prune"]),
    "meta a list": _set("meta", [1]),
    "inputs a string": _set("inputs", "normal"),
    "inputs shape a string": _set("inputs", {"latent_shape": "8"}),
    "inputs unknown key": _set("inputs", {"latent_shape": [8], "bogus": 1}),
    "inputs negative shape": _set("inputs", {"latent_shape": [-8]}),
    "root a list": lambda cfg: [cfg],
    "root a string": lambda cfg: "gan",
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_malformed_config(case: str, work: Path, tmp_path: Path) -> None:
    _edit_config(work, CONFIG_CASES[case])
    before = snapshot(tmp_path)
    code, out = cli("sample", work, "-n", "2", "--out", tmp_path / "s.png")
    assert_refused(code, out, contains=str(work))
    assert snapshot(tmp_path) == before  # no image written, the folder untouched


RAW_CONFIG_CASES: dict[str, bytes] = {
    "not JSON": b"{ this is not json",
    "empty": b"",
    "not UTF-8": b'{"kind": "\xff\xfe"}',
    "JSON NaN root": b"NaN",
    "JSON null": b"null",
}


@pytest.mark.parametrize("case", list(RAW_CONFIG_CASES))
def test_unreadable_config(case: str, work: Path, tmp_path: Path) -> None:
    (work / "config.json").write_bytes(RAW_CONFIG_CASES[case])
    code, out = cli("sample", work, "-n", "2", "--out", tmp_path / "s.png")
    assert_refused(code, out)
    assert not (tmp_path / "s.png").exists()


def test_config_error_names_field_value_and_what_is_allowed(work: Path, tmp_path: Path) -> None:
    _edit_config(work, _set("latent_dim", "8"))
    code, out = cli("sample", work, "-n", "2", "--out", tmp_path / "s.png")
    assert_refused(code, out, contains="field latent_dim is '8'; allowed: null or an integer from 1 to")


# ---------------------------------------------------------------------------------------------
# model.safetensors: refused, never cast or ignored


def _edit_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


def _tensor(key: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict[str, torch.Tensor]], None]:
    def edit(state: dict[str, torch.Tensor]) -> None:
        state[key] = fn(state[key]).contiguous()
    return edit


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[3] = float("nan")
    return t


def _inf(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("-inf")
    return t


W = "generator.net.0.weight"
WEIGHT_CASES: dict[str, Callable[[dict[str, torch.Tensor]], None]] = {
    "int8 where float32 is expected": _tensor(W, lambda t: t.mul(100).to(torch.int8)),
    "float64 where float32 is expected": _tensor(W, lambda t: t.double()),
    "float16 where float32 is expected": _tensor(W, lambda t: t.half()),
    "NaN weight": _tensor(W, _nan),
    "Inf weight": _tensor(W, _inf),
    "NaN in a BatchNorm buffer": _tensor("generator.net.1.running_var", _nan),
    "wrong shape": _tensor(W, lambda t: t[:4]),
    "tensor of no part": lambda s: s.update({"ghost.weight": torch.zeros(3)}),
    "extra tensor in a part": lambda s: s.update({"generator.extra": torch.zeros(3)}),
    "missing tensor": lambda s: s.pop(W),
}


@pytest.mark.parametrize("case", list(WEIGHT_CASES))
def test_bad_weights(case: str, work: Path, tmp_path: Path) -> None:
    _edit_weights(work, WEIGHT_CASES[case])
    before = snapshot(tmp_path)
    code, out = cli("sample", work, "-n", "2", "--out", tmp_path / "s.png")
    assert_refused(code, out, contains=str(work))
    assert snapshot(tmp_path) == before


RAW_WEIGHT_CASES: dict[str, Callable[[Path], None]] = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(b"\x00" * 64),
    "empty": lambda p: p.write_bytes(b""),
    "huge header length": lambda p: p.write_bytes((2**62).to_bytes(8, "little") + b"{}"),
    "header not JSON": lambda p: p.write_bytes((8).to_bytes(8, "little") + b"notjson!"),
    "missing": lambda p: p.unlink(),
    "a folder": lambda p: (p.unlink(), p.mkdir()),
    "a pickle": lambda p: torch.save({"w": torch.zeros(2)}, p),
}


@pytest.mark.parametrize("case", list(RAW_WEIGHT_CASES))
def test_unreadable_weights(case: str, work: Path, tmp_path: Path) -> None:
    RAW_WEIGHT_CASES[case](work / "model.safetensors")
    code, out = cli("sample", work, "-n", "2", "--out", tmp_path / "s.png")
    assert_refused(code, out)
    assert not (tmp_path / "s.png").exists()


# ---------------------------------------------------------------------------------------------
# code execution: a folder never makes slimgen import code


EVIL = "from pathlib import Path\nPath({marker!r}).write_text('pwned')\nimport torch\nclass Gen(torch.nn.Module):\n    pass\n"


def _evil_folder(work: Path, arch: str, marker: Path) -> None:
    """``work`` names ``arch``; an ``evilpkg`` that writes ``marker`` on import sits in the folder and beside it."""
    for where in (work, work.parent):
        (where / "evilpkg").mkdir(exist_ok=True)
        (where / "evilpkg" / "__init__.py").write_text(EVIL.format(marker=str(marker)))
        (where / "evilpkg" / "net.py").write_text(EVIL.format(marker=str(marker)))
    _edit_config(work, _set("parts/generator/arch", arch))


@pytest.mark.parametrize("arch", ["evilpkg.net:Gen", "evilpkg:Gen", "evilpkg.net:Gen.Inner", "this:Gen",
                                  "antigravity:Gen", "evilpkg.net:Gen"])
def test_folder_never_imports_code(arch: str, work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "marker"
    _evil_folder(work, arch, marker)
    monkeypatch.chdir(work.parent)
    monkeypatch.syspath_prepend(str(work.parent))  # as `python -m` from the folder's parent, or PYTHONPATH
    monkeypatch.syspath_prepend(str(work))
    module = arch.partition(":")[0]
    code, out = cli("sample", work, "-n", "2", "--out", tmp_path / "s.png")
    assert_refused(code, out, contains=f"--trust-code {arch}")
    assert f"module {module!r}" in out  # says what would be imported
    assert not marker.exists()
    assert module not in sys.modules


def test_trust_code_is_the_users_choice(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive control: with --trust-code the same folder does import (so the refusal above is real)."""
    marker = tmp_path / "marker"
    _evil_folder(work, "evilpkg.net:Gen", marker)
    monkeypatch.chdir(work.parent)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(work.parent))])
    monkeypatch.delitem(sys.modules, "evilpkg", raising=False)
    monkeypatch.delitem(sys.modules, "evilpkg.net", raising=False)
    code, out = cli("--trust-code", "evilpkg.net:Gen", "sample", work, "-n", "2", "--out", tmp_path / "s.png")
    assert marker.exists()  # the user chose it: imported (searched in the current folder last)
    assert_refused(code, out)  # Gen takes no nz/widths kwargs: still one line
    sys.modules.pop("evilpkg.net", None)
    sys.modules.pop("evilpkg", None)


def test_bad_trust_code_value(work: Path, tmp_path: Path) -> None:
    code, out = cli("--trust-code", "not a class", "sample", work, "-n", "2", "--out", tmp_path / "s.png")
    assert_refused(code, out, contains="--trust-code")


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
         preexec: Callable[[], None] | None = None) -> tuple[int, str]:
    import subprocess

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)
    return proc.returncode, proc.stdout + proc.stderr


def _pythonpath() -> str:
    return str(Path(__file__).resolve().parents[1])


def test_python_m_from_the_folders_parent_imports_nothing_from_there(work: Path, tmp_path: Path) -> None:
    """``python -m slimgen`` puts the current folder first on sys.path: neither the folder's arch nor a
    module slimgen imports later (PIL, when writing the PNG) may come from there."""
    marker = tmp_path / "marker"
    _evil_folder(work, "evilpkg.net:Gen", marker)
    (work.parent / "PIL").mkdir()
    (work.parent / "PIL" / "__init__.py").write_text(EVIL.format(marker=str(marker)))
    code, out = _run([sys.executable, "-m", "slimgen", "sample", "model", "-n", "2", "--out", "s.png"], cwd=work.parent,
                     env={"PYTHONPATH": _pythonpath()})
    assert_refused(code, out, contains="--trust-code evilpkg.net:Gen")
    assert not marker.exists()
    shutil.copy(work.parent / "model" / "config.json", tmp_path / "evil-config.json")
    _edit_config(work, _set("parts/generator/arch", "dcgan_generator"))  # a good folder: PIL is imported to save
    code, out = _run([sys.executable, "-m", "slimgen", "sample", "model", "-n", "2", "--out", "s.png"], cwd=work.parent,
                     env={"PYTHONPATH": _pythonpath()})
    assert code == 0, out
    assert not marker.exists()
    assert (work.parent / "s.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------
# recipes: limits and types before any work


BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                 + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
                    f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)])
BOMB_IN_OPTIONS = ("teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude:\n      sparsity: 0.5\n"
                   + "\n".join("      " + line for line in BOMB.splitlines()) + "\n")
FEW_ALIASES_BOMB = "\n".join(["teacher: zoo:dcgan-fmnist", "steps:", "  - prune_magnitude:", "      sparsity: 0.5",
                              "      a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                             + [f"      a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 6)])
BOMB_IN_STEP = ("teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude:\n      scope: &a [x, x, x, x, x, x, x, x, x]\n"
                + "".join(f"      k{i}: &a{i} [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" for i in range(1))
                + "      sparsity: 0.5\n")

RECIPE_CASES: dict[str, str | bytes] = {
    "billion laughs at top level": BOMB,
    "alias bomb in a step's options": BOMB_IN_OPTIONS,
    "alias bomb in evaluate": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\n"
                              "evaluate:\n  n: 10\n" + "\n".join("  " + line for line in BOMB.splitlines()),
    "alias bomb with few aliases": FEW_ALIASES_BOMB,
    "alias in an unknown setting": BOMB_IN_STEP,
    "recursive alias": "teacher: zoo:dcgan-fmnist\nsteps: &s [*s]\n",
    "deep nesting": "teacher: zoo:dcgan-fmnist\nsteps: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep mapping nesting": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: " + "{a: " * 40 + "1" + "}" * 40,
    "10 MB recipe": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\n# " + "x" * 10_000_000,
    "not UTF-8": b"teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5}  # \xff\xfe caf\xe9\n",
    "UTF-16": "teacher: zoo:dcgan-fmnist\nsteps: []\n".encode("utf-16"),
    "mixed int/str keys": "teacher: zoo:dcgan-fmnist\n1: x\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\n",
    "int key in a step": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {1: 0.5}\n",
    "bool key": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {true: 0.5}\n",
    "null key": "teacher: zoo:dcgan-fmnist\n~: 1\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\n",
    "list key": "teacher: zoo:dcgan-fmnist\n? [a, b]\n: 1\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\n",
    "duplicate key": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\nsteps: []\n",
    "quantize weights a string": "teacher: zoo:dcgan-fmnist\nsteps:\n  - quantize: {weights: int8}\n",
    "quantize method a list": "teacher: zoo:dcgan-fmnist\nsteps:\n  - quantize: {weights: {method: [linear]}}\n",
    "quantize bits a string": "teacher: zoo:dcgan-fmnist\nsteps:\n  - quantize: {weights: {method: linear, bits: '8'}}\n",
    "dataset a number": "teacher: zoo:dcgan-fmnist\ndataset: 123\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\n",
    "teacher a list": "teacher: [a, b]\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\n",
    "YAML syntax error": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5\n",
    "tab indentation": "teacher: zoo:dcgan-fmnist\nsteps:\n\t- prune_magnitude: {}\n",
    "bad indentation": "teacher: zoo:dcgan-fmnist\n steps:\n- x\n",
    "python object tag": "teacher: !!python/object/apply:os.system ['touch /tmp/slimgen-pwned']\nsteps: []\n",
    "unknown tag": "teacher: !custom zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\n",
    "unknown top-level key": "teacher: zoo:dcgan-fmnist\nstep:\n  - prune_magnitude: {}\n",
    "steps a mapping": "teacher: zoo:dcgan-fmnist\nsteps: {prune_magnitude: {}}\n",
    "steps empty": "teacher: zoo:dcgan-fmnist\nsteps: []\n",
    "no teacher": "steps:\n  - prune_magnitude: {sparsity: 0.5}\n",
    "unknown step": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_everything: {}\n",
    "step with two names": "teacher: zoo:dcgan-fmnist\nsteps:\n  - {prune_magnitude: {}, quantize: {}}\n",
    "step a string": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude\n",
    "step settings a list": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: [0.5]\n",
    "unknown setting": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsty: 0.5}\n",
    "ratio a string": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: half}\n",
    "ratio out of range": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 2}\n",
    "importance not allowed": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_channels: {importance: bogus}\n",
    "epochs 0": "teacher: zoo:dcgan-fmnist\nsteps:\n  - distill: {epochs: 0}\n",
    "epochs a float": "teacher: zoo:dcgan-fmnist\nsteps:\n  - distill: {epochs: 1.5}\n",
    "betas wrong length": "teacher: zoo:dcgan-fmnist\nsteps:\n  - distill: {betas: [0.5]}\n",
    "evaluate n 0": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\nevaluate: {n: 0}\n",
    "evaluate n a string": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\nevaluate: {n: many}\n",
    "evaluate a list": "teacher: zoo:dcgan-fmnist\nsteps:\n  - prune_magnitude: {sparsity: 0.5}\nevaluate: [1]\n",
    "export formats a string": "teacher: zoo:dcgan-fmnist\nsteps:\n  - export: {formats: onnx}\n",
    "export format unknown": "teacher: zoo:dcgan-fmnist\nsteps:\n  - export: {formats: [pdf]}\n",
    "empty file": "",
    "a scalar": "just a string\n",
    "a list": "- teacher\n- steps\n",
    "NUL byte": "teacher: zoo:dcgan-fmnist\x00\nsteps: []\n",
}


@pytest.mark.parametrize("case", list(RECIPE_CASES))
def test_bad_recipe(case: str, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    text = RECIPE_CASES[case]
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    before = snapshot(tmp_path)
    code, out = cli("compress", "--recipe", recipe, "--out", tmp_path / "run")
    assert_refused(code, out, contains=str(recipe))
    assert snapshot(tmp_path) == before  # refused before any work: no run folder
    assert not Path("/tmp/slimgen-pwned").exists()


def test_yaml_syntax_error_is_file_line_column(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("teacher: zoo:dcgan-fmnist\nsteps:\n  - prune: {sparsity: 0.5]\n")
    code, out = cli("compress", "--recipe", recipe, "--out", tmp_path / "run")
    assert_refused(code, out, contains=f"error: {recipe}:3:")


def test_recipe_files_that_are_not_files(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path):
        code, out = cli("compress", "--recipe", path, "--out", tmp_path / "run")
        assert_refused(code, out)
    assert not (tmp_path / "run").exists()


_BOMB_UNDER_LIMIT = r"""
import resource, sys
from slimgen.pipeline.recipe import load_recipe
from slimgen.errors import ConfigError
vm = [l for l in open('/proc/self/status') if l.startswith('VmData')][0].split()[1]
limit = int(vm) * 1024 + 256 * 2**20
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
try:
    load_recipe(sys.argv[1])
except ConfigError as exc:
    print('refused:', exc)
    sys.exit(0)
print('accepted')
sys.exit(1)
"""


def test_alias_bomb_under_a_memory_limit(tmp_path: Path) -> None:
    """A billion-laughs recipe (10^9 values when expanded) is refused in well under 256 MiB."""
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BOMB_IN_OPTIONS)
    code, out = _run([sys.executable, "-c", _BOMB_UNDER_LIMIT, str(recipe)], cwd=tmp_path,
                     env={"PYTHONPATH": _pythonpath()})
    assert code == 0, out
    assert "refused:" in out and "aliases" in out and "MemoryError" not in out


# ---------------------------------------------------------------------------------------------
# command-line usage: one line, exit 2


USAGE_CASES: dict[str, list[str]] = {
    "-n 0": ["sample", "{good}", "-n", "0", "--out", "{tmp}/s.png"],
    "-n negative": ["sample", "{good}", "-n", "-3", "--out", "{tmp}/s.png"],
    "-n not a number": ["sample", "{good}", "-n", "many", "--out", "{tmp}/s.png"],
    "missing --out": ["sample", "{good}"],
    "missing argument": ["sample"],
    "extra argument": ["sample", "{good}", "{good}", "--out", "{tmp}/s.png"],
    "unknown option": ["sample", "{good}", "--bogus", "--out", "{tmp}/s.png"],
    "unknown command": ["bogus"],
    "train --epochs 0": ["train", "dcgan", "--epochs", "0", "--out", "{tmp}/t"],
    "train --threads -1": ["train", "dcgan", "--threads", "-1", "--out", "{tmp}/t"],
    "train --batch-size 0": ["train", "dcgan", "--batch-size", "0", "--out", "{tmp}/t"],
    "train unknown kind": ["train", "gpt", "--out", "{tmp}/t"],
    "finetune --threads -1": ["finetune", "{good}", "--threads", "-1", "--out", "{tmp}/f"],
    "finetune --epochs 0": ["finetune", "{good}", "--epochs", "0", "--out", "{tmp}/f"],
    "distill --threads 0": ["distill", "{good}", "--width", "0.5", "--threads", "0", "--out", "{tmp}/d"],
    "distill without student": ["distill", "{good}", "--out", "{tmp}/d"],
    "distill --layer-bits without --fake-quant": ["distill", "{good}", "--width", "0.5", "--layer-bits", "net.0=4",
                                                 "--out", "{tmp}/d"],
    "distill --fake-quant kmeans4": ["distill", "{good}", "--width", "0.5", "--fake-quant", "kmeans4", "--out", "{tmp}/d"],
    "distill --fake-quant int9": ["distill", "{good}", "--width", "0.5", "--fake-quant", "int9", "--out", "{tmp}/d"],
    "quantize --threads -1": ["quantize", "{good}", "--threads", "-1", "--out", "{tmp}/q"],
    "quantize unknown scheme": ["quantize", "{good}", "--weights", "int3000", "--out", "{tmp}/q"],
    "prune --ratio not a number": ["prune", "{good}", "--ratio", "half", "--out", "{tmp}/p"],
    "prune --ratio 2": ["prune", "{good}", "--ratio", "2", "--out", "{tmp}/p"],
    "prune --layer-ratio without =": ["prune", "{good}", "--layer-ratio", "net.0", "--out", "{tmp}/p"],
    "prune --layer-ratio not a number": ["prune", "{good}", "--layer-ratio", "net.0=half", "--out", "{tmp}/p"],
    "prune --layer-ratio unknown layer": ["prune", "{good}", "--layer-ratio", "net.99=0.5", "--out", "{tmp}/p"],
    "prune --layer-ratio with magnitude": ["prune", "{good}", "--method", "magnitude", "--layer-ratio", "net.0=0.5",
                                          "--out", "{tmp}/p"],
    "quantize --layer-bits without =": ["quantize", "{good}", "--layer-bits", "net.0", "--out", "{tmp}/q"],
    "quantize --layer-bits not a number": ["quantize", "{good}", "--layer-bits", "net.0=five", "--out", "{tmp}/q"],
    "quantize --layer-bits 9": ["quantize", "{good}", "--layer-bits", "net.0=9", "--out", "{tmp}/q"],
    "quantize --layer-bits unknown layer": ["quantize", "{good}", "--layer-bits", "net.99=4", "--out", "{tmp}/q"],
    "prune --method unknown": ["prune", "{good}", "--method", "bogus", "--out", "{tmp}/p"],
    "prune --part unknown": ["prune", "{good}", "--part", "encoder", "--out", "{tmp}/p"],
    "evaluate -n 1": ["evaluate", "{good}", "-n", "1"],
    "export --format unknown": ["export", "{good}", "--format", "pdf", "--out", "{tmp}/m.onnx"],
    "export --calibration 0": ["export", "{good}", "--int8", "--calibration", "0", "--out", "{tmp}/m.onnx"],
    "model folder missing": ["sample", "{tmp}/nope", "--out", "{tmp}/s.png"],
    "model is a file": ["sample", "{good}/config.json", "--out", "{tmp}/s.png"],
    "unknown zoo model": ["sample", "zoo:nope", "--out", "{tmp}/s.png"],
    "sample bad suffix": ["sample", "{good}", "--out", "{tmp}/s.jpg"],
    "zoo path unknown": ["zoo", "path", "nope"],
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_usage_errors(case: str, good: Path, tmp_path: Path) -> None:
    before_good, before_tmp = snapshot(good), snapshot(tmp_path)
    args = [a.format(good=good, tmp=tmp_path) for a in USAGE_CASES[case]]
    code, out = cli(*args)
    assert_refused(code, out)
    assert "╭" not in out  # not typer's boxed panel
    assert snapshot(good) == before_good and snapshot(tmp_path) == before_tmp


# ---------------------------------------------------------------------------------------------
# output paths: never into the zoo, never a mix, --overwrite replaces whole


def test_prune_refuses_to_write_into_the_zoo(tmp_path: Path) -> None:
    zoo = ZOO_DIR / "dcgan-fmnist"
    before = snapshot(zoo)
    for out in (zoo, zoo / "sub", ZOO_DIR):
        for extra in ([], ["--overwrite"]):
            code, msg = cli("prune", "zoo:dcgan-fmnist", "--method", "magnitude", "--ratio", "0.3", "--out", out, *extra)
            assert_refused(code, msg, contains="zoo")
    assert snapshot(zoo) == before


def test_other_writers_refuse_the_zoo(tmp_path: Path) -> None:
    zoo = ZOO_DIR / "dcgan-fmnist"
    before = snapshot(ZOO_DIR)
    for args in (["quantize", "zoo:dcgan-fmnist", "--out", zoo], ["rotate-latent", "zoo:dcgan-fmnist", "--out", zoo],
                 ["export", "zoo:dcgan-fmnist"], ["export", "zoo:dcgan-fmnist", "--out", zoo / "model.onnx"],
                 ["train", "dcgan", "--out", zoo], ["finetune", "zoo:dcgan-fmnist", "--out", zoo]):
        code, msg = cli(*args)
        assert_refused(code, msg)
    assert snapshot(ZOO_DIR) == before


def _old_folder(tmp_path: Path) -> Path:
    old = save_folder(_bundle(0.0, seed=1), tmp_path / "out", card="# old\n")
    (old / "metrics.json").write_text('{"fid": 1.0}')
    (old / "history.json").write_text("[]")
    return old


@pytest.mark.parametrize("command", [
    ["prune", "{good}", "--method", "magnitude", "--ratio", "0.3"],
    ["quantize", "{good}", "--weights", "int8"],
    ["rotate-latent", "{good}", "--steps", "1"],
    ["finetune", "{good}", "--epochs", "1"],
    ["distill", "{good}", "--width", "0.5"],
    ["train", "dcgan", "--epochs", "1"],
])
def test_out_onto_a_non_empty_folder_is_refused(command: list[str], good: Path, tmp_path: Path) -> None:
    old = _old_folder(tmp_path)
    before = snapshot(tmp_path)
    code, out = cli(*[a.format(good=good) for a in command], "--out", old)
    assert_refused(code, out, contains="--overwrite")
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_the_folder_whole(good: Path, tmp_path: Path) -> None:
    old = _old_folder(tmp_path)
    code, out = cli("prune", good, "--method", "magnitude", "--ratio", "0.3", "--out", old, "--overwrite")
    assert code == 0, out
    assert sorted(p.name for p in old.iterdir()) == ["card.md", "config.json", "model.safetensors"]  # no old metrics
    assert json.loads((old / "config.json").read_text())["steps"][-1]["config"]["sparsity"] == 0.3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary sibling left


@pytest.mark.parametrize("case", ["out is a file", "parent is a file", "grandparent is a file"])
def test_out_paths_of_the_wrong_kind(case: str, good: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("keep me")
    out = {"out is a file": tmp_path / "file", "parent is a file": tmp_path / "file" / "out",
           "grandparent is a file": tmp_path / "file" / "a" / "b"}[case]
    before = snapshot(tmp_path)
    for args in (["prune", good, "--method", "magnitude", "--out", out], ["quantize", good, "--out", out],
                 ["sample", good, "-n", "2", "--out", f"{out}.png" if case != "out is a file" else tmp_path],
                 ["export", good, "--out", out / "m.onnx"], ["compress", "--recipe", RECIPES / "default.yaml",
                                                              "--out", out]):
        code, msg = cli(*args)
        assert_refused(code, msg)
    assert snapshot(tmp_path) == before


def test_compress_refuses_a_folder_that_is_not_its_run(good: Path, tmp_path: Path) -> None:
    old = _old_folder(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"teacher: {good}\nsteps:\n  - prune_magnitude: {{sparsity: 0.5}}\nevaluate: {{n: 8}}\n")
    before = snapshot(tmp_path)
    code, out = cli("compress", "--recipe", recipe, "--out", old)
    assert_refused(code, out, contains="--overwrite")
    assert snapshot(tmp_path) == before


def test_pickle_is_never_executed(good: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.write_text, (marker, "pwned"))

    torch.save({"weights": torch.zeros(1), "x": Evil()}, tmp_path / "inception.pth")
    code, out = cli("evaluate", good, "-n", "2", "--inception-weights", tmp_path / "inception.pth", "--no-write",
                    "--no-latency")
    assert_refused(code, out, contains="refused to unpickle")
    assert "--trust-pickle" not in out  # evaluate has no such option: the message says what to do instead
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# SIGKILL inside a folder write: the old folder or the new one, never a mix


_KILL_SCRIPT = r"""
import os, sys, time, signal
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from test_bad_inputs import _bundle
import slimgen.io as sio
import slimgen.models.folder as folder
stage, out = sys.argv[1], Path(sys.argv[2])

def pause():
    Path(str(out) + '.ready').write_text(stage)
    time.sleep(60)

if stage == 'weights':  # killed after the weights, before config.json
    real = folder.save_file
    def save_file(*a, **k):
        real(*a, **k); pause()
    folder.save_file = save_file
elif stage == 'swap':  # killed with the new folder complete, just before the swap
    real_swap = sio.swap_in_folder
    def swap(*a):
        pause(); return real_swap(*a)
    sio.swap_in_folder = swap
elif stage == 'cleanup':  # killed right after the swap, before the old folder is deleted
    real_rmtree = sio.shutil.rmtree
    def rmtree(p, *a, **k):
        if Path(p).exists() and (Path(p) / 'config.json').exists():
            pause()
        return real_rmtree(p, *a, **k)
    sio.shutil.rmtree = rmtree
folder.save_folder(_bundle(0.6, seed=2), out)
"""


@pytest.mark.parametrize("stage", ["weights", "swap", "cleanup"])
def test_sigkill_inside_a_folder_write(stage: str, tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from slimgen.models import load_folder

    out = save_folder(_bundle(0.3, seed=1), tmp_path / "model")
    old_weights = load_file(str(out / "model.safetensors"))
    env = {**os.environ, "PYTHONPATH": _pythonpath(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, stage, str(out), str(Path(__file__).parent)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ready = Path(f"{out}.ready")
    deadline = time.monotonic() + 90
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    bundle = load_folder(out)  # loads: a complete folder, never a mix
    weights = load_file(str(out / "model.safetensors"))
    is_old = all(torch.equal(weights[k], old_weights[k]) for k in old_weights)
    assert bundle.meta["tag"] == (0.3 if is_old else 0.6)
    assert is_old == (stage != "cleanup")
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model."))
    assert left, "the killed write left its temporary sibling (what the next write sweeps)"
    live = tmp_path / f".model.{os.getpid()}.keep.tmp"  # a sibling of a process still running: kept
    live.mkdir()
    save_folder(_bundle(0.9, seed=3), out)  # the next write of the same folder sweeps what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model.")) == [live.name]
    assert load_folder(out).meta["tag"] == 0.9


# ---------------------------------------------------------------------------------------------
# full disk and read-only file system (a small tmpfs in a private mount namespace)


def _can_mount() -> str | None:
    import subprocess

    if not shutil.which("unshare") or sys.platform != "linux":
        return "needs Linux and unshare(1)"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip()}"


_NO_MOUNT = _can_mount()


_FS_DRIVER = r"""
import sys
from slimgen.cli import main
good, mnt = sys.argv[1], sys.argv[2]
for fs in ("full", "ro"):
    for args in (["prune", good, "--method", "magnitude", "--ratio", "0.3", "--out", f"{mnt}/{fs}/p"],
                 ["quantize", good, "--weights", "int8", "--out", f"{mnt}/{fs}/sub/q"],
                 ["sample", good, "-n", "256", "--out", f"{mnt}/{fs}/s.npy"]):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
        print(f"rc={code}", flush=True)
"""


@pytest.mark.skipif(_NO_MOUNT is not None, reason=f"full-disk test skipped: {_NO_MOUNT}")
def test_full_disk_and_read_only_file_system(good: Path, tmp_path: Path) -> None:
    """Disk full (a 16 KiB tmpfs) and a read-only tmpfs: one error line each, exit 2, nothing left behind."""
    mnt = tmp_path / "mnt"
    (mnt / "full").mkdir(parents=True)
    (mnt / "ro").mkdir()
    script = (f"mount -t tmpfs -o size=16k tmpfs {mnt}/full && mount -t tmpfs -o size=1m,ro tmpfs {mnt}/ro || exit 99\n"
              f"OMP_NUM_THREADS=1 PYTHONPATH={_pythonpath()} {sys.executable} -c '{_FS_DRIVER}' {good} {mnt} 2>&1\n"
              f"echo left: $(find {mnt}/full {mnt}/ro -mindepth 1 ! -path '*/full/sub')\n")  # sub: an empty parent
    code, out = _run(["unshare", "-rm", "sh", "-c", script], cwd=tmp_path, timeout=180)
    assert code == 0, out
    lines = out.strip().splitlines()
    assert [line for line in lines if line.startswith("rc=")] == ["rc=2"] * 6, out
    assert len([line for line in lines if line.startswith("error:")]) == 6, out
    assert "Traceback" not in out
    assert "no space left on device" in out or "disk full" in out, out
    assert "read-only file system" in out, out
    assert lines[-1] == "left:", out  # no partial folder, no temporary sibling


def test_file_outputs_onto_an_existing_folder(good: Path, tmp_path: Path) -> None:
    for name in ("s.png", "s.npy", "m.onnx"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep").write_text("keep me")
    before = snapshot(tmp_path)
    for args in (["sample", good, "-n", "2", "--out", tmp_path / "s.png"],
                 ["sample", good, "-n", "2", "--out", tmp_path / "s.npy"],
                 ["export", good, "--out", tmp_path / "m.onnx"]):
        code, out = cli(*args)
        assert_refused(code, out)
    assert snapshot(tmp_path) == before


def test_cli_warnings_are_one_line() -> None:
    """A warning on the command line reads ``warning: ...`` on one line (not the file, line number and source of
    the call that raised it), like the ``error:`` lines."""
    import warnings

    import tqdm.std

    from slimgen.cli import quiet_third_party

    before = (warnings.formatwarning, tqdm.std.tqdm.__init__, list(warnings.filters))
    with quiet_third_party():
        text = warnings.formatwarning(UserWarning("bf16 training on this CPU,\n   emulated"), UserWarning,
                                      "/x/slimgen/train/loop.py", 150, "    warnings.warn(...)")
    assert text == "warning: bf16 training on this CPU, emulated\n"
    # a program that calls the CLI in-process gets its own warnings and progress bars back
    assert (warnings.formatwarning, tqdm.std.tqdm.__init__, list(warnings.filters)) == before

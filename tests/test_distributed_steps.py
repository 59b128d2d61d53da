"""Fine-tuning, distillation and QAT under torchrun: 2 CPU processes (gloo, loopback) match 1 process.

Each step runs through its CLI command (``slimgen finetune``, ``slimgen distill``,
``slimgen quantize --qat-epochs``) on tiny DCGANs: once in this process, once under
``torchrun --nproc_per_node 2`` with this file as the script (``_worker`` below). The
fine-tuning input is magnitude-pruned (its zeros are held by masks while it trains); the
DCGAN distillation uses the output, feature (1x1 adapters) and adversarial terms; the VAE
distillation trains a half-width decoder and the encoder (reconstruction and KL terms); QAT
uses int4 fake quantization. BatchNorm is synchronised (the default), so the runs agree up to
float rounding (observed ~3e-8; tolerance 1e-5, while training moves weights by more than 100x that).

The per-epoch FID that picks the best epoch is replaced by fixed scores (``SCORES``: epoch 2
is best, not the last), so the test checks that rank 0's choice reaches every rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from slimgen.cli import app
from slimgen.io import read_json
from slimgen.models import DCGANDiscriminator, DCGANGenerator, ModelBundle, load_folder, save_folder

pytestmark = pytest.mark.slow

STEPS, BATCH, TOL = 2, 8, 1e-5
SCORES = (2.0, 1.0, 3.0)  # the stand-in FID of epochs 1, 2, 3
JOBS = ("finetune", "distill", "distill_vae", "qat")
# The VAE decoder's ConvTranspose bias right before BatchNorm has no effect on the loss: its
# gradient is float rounding noise, which Adam scales to full steps, so it (and the running mean
# that tracks it) differs between any two runs that round differently (see
# slimgen.train.distributed). The generator's train-mode outputs, which it cannot change, are compared instead.
NO_EFFECT = {"distill_vae": ("generator.net.1.bias", "generator.net.2.running_mean")}


def _commands(inputs: Path, out: Path, *, resume: bool = False) -> dict[str, list[str]]:
    """The CLI arguments of each job (global batch BATCH, STEPS steps per epoch)."""
    run = ["--dataset", str(inputs / "data.npy"), "--device", "cpu", "--threads", "1", *(["--resume"] if resume else [])]
    steps = ["--steps-per-epoch", str(STEPS), "--batch-size", str(BATCH)]
    return {
        "finetune": ["finetune", str(inputs / "pruned"), "--teacher", str(inputs / "teacher"), "--out", str(out / "finetune"),
                     "--epochs", "3", "--teacher-weight", "1", *steps, *run],
        "distill": ["distill", str(inputs / "teacher"), "--student", str(inputs / "student"), "--out", str(out / "distill"),
                    "--epochs", "3", "--feature", "1", "--adversarial", "0.1", *steps, *run],
        "distill_vae": ["distill", str(inputs / "vae"), "--width", "0.5", "--out", str(out / "distill_vae"), "--epochs", "3",
                        "--vae-recon", "1", "--vae-kl", "0.1", *steps, *run],
        "qat": ["quantize", str(inputs / "teacher"), "--weights", "int4", "--qat-epochs", "2", "--qat-steps", str(STEPS),
                "--qat-batch-size", str(BATCH), "--out", str(out / "qat"), *run],
    }


def _stand_in_scorer(start: int) -> Callable[..., Callable[[torch.nn.Module], float]]:
    """A ``fid_scorer`` replacement: epoch e (counted from the checkpoint's ``start``) scores SCORES[e - 1]."""
    def make(latent_dim: int, *, n: int = 2000, seed: int = 1) -> Callable[[torch.nn.Module], float]:
        calls = [start]

        def score(generator: torch.nn.Module) -> float:
            calls[0] += 1
            return SCORES[calls[0] - 1]
        return score
    return make


def _stand_in_selection(start: int) -> Callable[..., Callable[[torch.nn.Module], float]]:
    """A ``scorer_for`` replacement (what the CLI's best-epoch selection calls): the stand-in scores above."""
    return lambda *args, **kwargs: _stand_in_scorer(start)(0)


def _start_epoch(folder: Path, resume: bool) -> int:
    state = folder / "checkpoint" / "state.json"
    return int(read_json(state)["epoch"]) if resume and state.is_file() else 0


# --- the torchrun side: this file run as a script on every rank -----------------------------------------

def _worker(inputs: Path, out: Path, jobs: list[str], resume: bool, die_at: int) -> None:
    """Run ``jobs`` through the CLI on this rank and print what it wrote and kept, as one RESULT line.

    Test-only instruments: every atomic write ends in ``os.replace`` (recorded), ``BestKeeper.load_best``
    reports the epoch it restores and a checksum, and with ``die_at`` rank 1 SIGKILLs itself
    at its ``die_at``-th GAN step, so the group dies mid-epoch. Each command leaves the process
    group when it ends (a group cannot be joined twice through torchrun's store); here the
    commands share one group, left at exit.
    """
    import signal

    import slimgen.train.finetune as ft
    from slimgen.train import distributed, tasks

    leave = distributed.teardown
    distributed.teardown = lambda: None  # type: ignore[assignment]
    torch.set_num_threads(1)
    rank, written, kept = os.environ["RANK"], [], []
    replace = os.replace

    def recording_replace(src: str, dst: str) -> None:
        written.append(str(Path(dst).relative_to(out)))
        replace(src, dst)
    os.replace = recording_replace  # type: ignore[assignment]
    load_best = ft.BestKeeper.load_best

    def reporting_load_best(self: ft.BestKeeper) -> None:
        load_best(self)
        kept.append([self.epoch, sum(float(v.double().abs().sum()) for v in self.module.state_dict().values())])
    ft.BestKeeper.load_best = reporting_load_best  # type: ignore[method-assign]
    if die_at:
        step, count = tasks.GANTask.step, [0]

        def dying_step(self: tasks.GANTask, *args: object) -> dict[str, float]:
            count[0] += 1
            if count[0] == die_at and rank == "1":
                os.kill(os.getpid(), signal.SIGKILL)
            return step(self, *args)
        tasks.GANTask.step = dying_step  # type: ignore[method-assign]
    commands = _commands(inputs, out, resume=resume)
    for job in jobs:
        ft.scorer_for = _stand_in_selection(_start_epoch(out / job, resume))  # type: ignore[assignment]
        app(commands[job], standalone_mode=False)
    leave()
    print("RESULT " + json.dumps({"rank": int(rank), "written": written, "kept": kept}), flush=True)


def _torchrun(inputs: Path, out: Path, jobs: list[str], *, resume: bool = False, die_at: int = 0
              ) -> tuple[subprocess.CompletedProcess, dict[int, dict]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
           str(inputs), str(out), ",".join(jobs), "resume" if resume else "fresh", str(die_at)]
    run = subprocess.run(cmd, env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=240)
    return run, {r["rank"]: r for r in _results(run.stdout)}


def _results(stdout: str) -> list[dict]:
    """Every ``RESULT {json}`` the ranks printed; two ranks' lines can interleave (print writes the text and
    the newline separately), so objects are decoded where they start rather than line by line."""
    decoder, found = json.JSONDecoder(), []
    start = stdout.find("RESULT ")
    while start != -1:
        obj, end = decoder.raw_decode(stdout, start + len("RESULT "))
        found.append(obj)
        start = stdout.find("RESULT ", end)
    return found


# --- the pytest side --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Teacher (DCGAN 28x28, latent 8), its 50% magnitude-pruned copy, a half-width student, a VAE, 64 images."""
    from slimgen.distill import slim_student
    from slimgen.models import VAEDecoder, VAEEncoder
    from slimgen.prune import MagnitudePruning, prune

    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    gk = {"nz": 8, "channels": 1, "image_size": 28, "widths": [16, 8]}
    dk = {"channels": 1, "image_size": 28, "widths": [8, 16]}
    g, d = DCGANGenerator(**gk), DCGANDiscriminator(**dk)
    g.train()(torch.randn(16, 8))  # non-trivial BatchNorm running statistics
    teacher = ModelBundle.from_modules("gan", {"generator": g.eval(), "discriminator": d.eval()},
                                       {"generator": gk, "discriminator": dk}, latent_dim=8, image_shape=(1, 28, 28))
    save_folder(teacher, folder / "teacher")
    save_folder(prune(teacher, MagnitudePruning(sparsity=0.5)), folder / "pruned")
    save_folder(slim_student(teacher, 0.5, seed=1), folder / "student")
    vk = {"nz": 8, "channels": 1, "image_size": 28, "widths": [16, 8]}
    vae = ModelBundle.from_modules("vae", {"generator": VAEDecoder(**vk).eval(), "encoder": VAEEncoder(**vk).eval()},
                                   {"generator": vk, "encoder": vk}, latent_dim=8, image_shape=(1, 28, 28))
    save_folder(vae, folder / "vae")
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)).mul(2).sub(1)
    np.save(folder / "data.npy", images.numpy())
    return folder


@pytest.fixture(scope="module")
def single(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every job in this process (no torchrun), as a user without torchrun runs it."""
    import slimgen.train.finetune as ft

    out = tmp_path_factory.mktemp("single")
    with pytest.MonkeyPatch.context() as mp:
        for args in _commands(inputs, out).values():
            mp.setattr(ft, "scorer_for", _stand_in_selection(0))
            app(args, standalone_mode=False)
    yield out


@pytest.fixture(scope="module")
def ddp(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, dict[int, dict]]:
    out = tmp_path_factory.mktemp("ddp")
    run, results = _torchrun(inputs, out, list(JOBS))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out, run, results


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a if not k.endswith(skip))


@torch.no_grad()
def _train_mode_images(path: Path) -> torch.Tensor:
    """The model folder's generator on 16 fixed latents with batch statistics (16, C, H, W)."""
    bundle = load_folder(path)
    return bundle.generator.train()(torch.randn(16, bundle.latent_dim or 1, generator=torch.Generator().manual_seed(7)))


def _folder_state(path: Path) -> dict[str, torch.Tensor]:
    bundle = load_folder(path)
    return {f"{part}.{k}": v for part, m in bundle.parts.items() for k, v in m.state_dict().items()}


def _checkpoint_modules(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path / "checkpoint" / "state.safetensors")).items() if k.startswith("module.")}


def test_both_ranks_finish_and_only_rank_0_writes(ddp: tuple[Path, subprocess.CompletedProcess, dict[int, dict]]) -> None:
    out, run, results = ddp
    assert sorted(results) == [0, 1], run.stdout[-3000:]
    assert results[1]["written"] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(JOBS)
    # one process reports: an epoch line per epoch (3 epochs, QAT 2) and one "wrote" per command
    assert run.stdout.count(" epoch 1/3:") == 3 and run.stdout.count(" epoch 1/2:") == 1, run.stdout[-3000:]
    assert run.stdout.count("wrote ") == len(JOBS)
    for job in JOBS:  # checkpoints by os.replace (recorded); the model folder is swapped in whole (io.atomic_folder)
        assert f"{job}/checkpoint/state.safetensors" in results[0]["written"]
        assert (out / job / "model.safetensors").is_file() and (out / job / "config.json").is_file()
    assert read_json(out / "finetune" / "checkpoint" / "state.json")["epoch"] == 3
    assert read_json(out / "finetune" / "checkpoint" / "best.json")["epoch"] == 2
    assert load_folder(out / "finetune").steps[-1]["processes"] == 2


@pytest.mark.parametrize("job", JOBS)
def test_two_processes_match_one(job: str, ddp: tuple[Path, subprocess.CompletedProcess, dict[int, dict]],
                                 single: Path, inputs: Path) -> None:
    out, _, _ = ddp
    skip = NO_EFFECT.get(job, ())
    assert _max_difference(_folder_state(out / job), _folder_state(single / job), skip) < TOL  # the model folder written
    assert _max_difference(_checkpoint_modules(out / job), _checkpoint_modules(single / job), skip) < TOL  # the last epoch
    assert (_train_mode_images(out / job) - _train_mode_images(single / job)).abs().max() < TOL
    # the comparison can fail: training moved the weights far beyond the tolerance
    source, part = {"finetune": ("pruned", "generator."), "distill": ("student", "generator."),
                    "distill_vae": ("vae", "encoder."), "qat": ("teacher", "generator.")}[job]
    before, after = _folder_state(inputs / source), _folder_state(out / job)
    keys = [k for k in after if k.startswith(part)]
    assert _max_difference({k: after[k] for k in keys}, {k: before[k] for k in keys}) > 100 * TOL


def test_best_epoch_is_the_same_on_both_ranks(ddp: tuple[Path, subprocess.CompletedProcess, dict[int, dict]]) -> None:
    _, _, results = ddp
    kept = [results[r]["kept"] for r in (0, 1)]
    assert [k[0] for k in kept[0]] == [2, 2, 2, 0]  # fine-tuning and distillation keep epoch 2 (score 1.0); QAT scores nothing
    assert kept[0] == kept[1]  # rank 1 restores rank 0's choice (DDP replicas are bitwise equal), not its last epoch


def test_resume_after_the_group_is_killed_mid_epoch(inputs: Path, single: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    killed, _ = _torchrun(inputs, out, ["finetune"], die_at=2 * STEPS + 1)  # rank 1 dies at step 1 of epoch 3
    assert killed.returncode != 0 and "SIGKILL" in killed.stdout + killed.stderr
    assert read_json(out / "finetune" / "checkpoint" / "state.json")["epoch"] == 2
    assert not (out / "finetune" / "model.safetensors").exists()
    resumed, results = _torchrun(inputs, out, ["finetune"], resume=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert results[1]["written"] == [] and [k[0] for r in (0, 1) for k in results[r]["kept"]] == [2, 2]
    history = read_json(out / "finetune" / "checkpoint" / "state.json")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and [h["score"] for h in history] == list(SCORES)
    assert _max_difference(_folder_state(out / "finetune"), _folder_state(single / "finetune")) < TOL
    assert _max_difference(_checkpoint_modules(out / "finetune"), _checkpoint_modules(single / "finetune")) < TOL


if __name__ == "__main__":  # run by torchrun on every rank
    _worker(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","), sys.argv[4] == "resume", int(sys.argv[5]))

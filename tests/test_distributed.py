"""Training under torchrun: 2 CPU processes (gloo, loopback) match 1 process; resume after a kill.

The DCGAN has BatchNorm in both networks; the 2-process runs use the default
``sync_batchnorm=True`` (on CPU: :class:`slimgen.train.distributed.AllReduceBatchNorm`), so
their statistics cover the global batch and the result equals the 1-process run up to float
rounding (observed ~1e-7; tolerance 1e-5, while 6 Adam steps move weights by ~1e-3).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from slimgen.data import ImageSet
from slimgen.models import load_folder
from slimgen.train import DCGANTraining, train
from slimgen.train.checkpoint import load_checkpoint
from slimgen.train.distributed import restore_batchnorm, sync_batchnorm

pytestmark = pytest.mark.slow

STEPS, TOL = 3, 1e-5
TINY = {"batch_size": 8, "latent_dim": 8, "generator_widths": [8, 4], "discriminator_widths": [4, 8]}

# Run by torchrun on every rank: the tiny training of TINY, and two test-only instruments:
# which files each rank writes (os.replace is the last call of every atomic write), and a
# fault (rank 1 SIGKILLs itself at its DIE_AT-th step, so the group dies mid-epoch).
SCRIPT = f"""
import os, signal, sys
import torch
torch.set_num_threads(1)
from slimgen.data import ImageSet
from slimgen.train import DCGANTraining, tasks, train

out, epochs, resume, die_at = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume", int(sys.argv[4])
rank, written = os.environ["RANK"], []
replace = os.replace
def recording_replace(src, dst):
    written.append(str(dst))
    replace(src, dst)
os.replace = recording_replace
if die_at:
    step, count = tasks.GANTask.step, [0]
    def dying_step(self, *args):
        count[0] += 1
        if count[0] == die_at and rank == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        return step(self, *args)
    tasks.GANTask.step = dying_step
g = torch.Generator().manual_seed(0)
data = ImageSet(torch.rand(64, 1, 28, 28, generator=g).mul(2).sub(1), None, "random")
train(DCGANTraining(epochs=epochs, **{TINY}), out=out, data=data, steps_per_epoch={STEPS}, device="cpu",
      resume=resume)
print(f"rank {{rank}} finished, wrote {{len(written)}} files", flush=True)
"""


def _data() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.rand(64, 1, 28, 28, generator=g).mul(2).sub(1), None, "random")


def _torchrun(tmp: Path, out: Path, epochs: int, *, resume: bool = False, die_at: int = 0) -> subprocess.CompletedProcess:
    script = tmp / "run_tiny.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(out), str(epochs), "resume" if resume else "fresh", str(die_at)]
    return subprocess.run(cmd, env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=240)


def _single(out: Path, epochs: int, seed: int = 0) -> Path:
    train(DCGANTraining(epochs=epochs, seed=seed, **TINY), out=out, data=_data(), steps_per_epoch=STEPS, device="cpu")
    return out


def _max_difference(a: Path, b: Path) -> float:
    ma, mb = load_folder(a), load_folder(b)
    diffs = [(sa[k].float() - mb.parts[part].state_dict()[k].float()).abs().max().item()
             for part in ma.parts for sa in [ma.parts[part].state_dict()] for k in sa]
    return max(diffs)


def test_two_processes_match_one(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    run = _torchrun(tmp_path, out, 2)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert "rank 0 finished" in log and "rank 1 finished, wrote 0 files" in log, log[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "run_tiny.py"]
    assert load_checkpoint(out / "checkpoint", modules={}, optimizers={})["epoch"] == 2
    assert _max_difference(out, _single(tmp_path / "one", 2)) < TOL
    # the comparison can fail: another seed lands far outside the tolerance
    assert _max_difference(out, _single(tmp_path / "other", 2, seed=1)) > 100 * TOL


def test_resume_after_the_group_is_killed_mid_epoch(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    killed = _torchrun(tmp_path, out, 2, die_at=STEPS + 2)  # rank 1 dies at step 2 of epoch 2
    assert killed.returncode != 0 and "SIGKILL" in killed.stdout + killed.stderr
    assert load_checkpoint(out / "checkpoint", modules={}, optimizers={})["epoch"] == 1
    assert not (out / "model.safetensors").exists()
    resumed = _torchrun(tmp_path, out, 2, resume=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert [r["epoch"] for r in load_checkpoint(out / "checkpoint", modules={}, optimizers={})["history"]] == [1, 2]
    assert _max_difference(out, _single(tmp_path / "one", 2)) < TOL


def test_sync_batchnorm_swaps_back_sharing_state() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(4)))
    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    undo = sync_batchnorm(net, torch.device("cpu"))
    assert len(undo) == 2 and not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in net.modules())
    assert {k: v.data_ptr() for k, v in net.state_dict().items()} == before  # same keys, same tensors
    restore_batchnorm(undo)
    assert type(net[1]) is nn.BatchNorm2d and type(net[2][0]) is nn.BatchNorm1d

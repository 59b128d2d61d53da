"""Every epoch of a run's distillation kept, to score them in any space afterwards (a study tool, not a feature).

    EPOCH_DIR=runs/X/epochs python bench/keep_epochs.py compress --recipe RECIPE --out runs/X/run
    python bench/keep_epochs.py folders runs/X/epochs runs/X/run/NN-distill runs/X/folders

The first form is ``slimgen compress`` (any slimgen command) with each scored epoch's generator state written to
``EPOCH_DIR/eNN.safetensors`` and its selection score appended to ``EPOCH_DIR/scores.jsonl``, beside what the run
does anyway (training is deterministic for a seed and thread count, so the run is the one without this script).
The second makes a model folder per epoch: the distill step's folder with that epoch's generator tensors, which
``bench/fid_seeds.py`` scores like any folder (bench/results/frontier_s39.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def _keep_every_epoch(out: Path) -> None:
    from safetensors.torch import save_file

    import slimgen.train.trainer as trainer

    out.mkdir(parents=True, exist_ok=True)
    offer = trainer.BestKeeper.offer

    def keeping(self: trainer.BestKeeper, epoch: int, score: float) -> None:
        state = {k: v.detach().cpu().clone().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(out / f"e{epoch:02d}.safetensors"))
        with open(out / "scores.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch, "score": score}) + "\n")
        offer(self, epoch, score)

    trainer.BestKeeper.offer = keeping  # type: ignore[method-assign]


def _folders(epochs: Path, distill: Path, out: Path) -> None:
    from safetensors.torch import load_file, save_file

    for f in sorted(epochs.glob("e*.safetensors")):
        dst = out / f.stem
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(distill, dst)
        tensors = load_file(str(distill / "model.safetensors"))
        for k, v in load_file(str(f)).items():
            if "generator." + k not in tensors:
                raise SystemExit(f"{f}: {k} is not a generator tensor of {distill}")
            tensors["generator." + k] = v
        save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
        print(dst)


if __name__ == "__main__":
    if sys.argv[1:2] == ["folders"]:
        _folders(*(Path(a) for a in sys.argv[2:5]))
    else:
        _keep_every_epoch(Path(os.environ["EPOCH_DIR"]))
        from slimgen.cli import main

        sys.argv = ["slimgen", *sys.argv[1:]]
        main()

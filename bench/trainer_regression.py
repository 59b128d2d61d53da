"""Fixed-seed short training runs whose weights and loss histories must not change across a refactor.

Runs every training path on tiny models (the test suite's ``tiny_gan`` / ``tiny_vae`` shapes) and
256 random images: ``train`` (DCGAN, conditional DCGAN, VAE, classifier), ``finetune`` (teacher
term, the teacher's discriminator, kept zeros, a sparsity penalty, best-epoch selection),
``distill`` (output, feature, perceptual in the training space ``random:1``, adversarial; VAE
recon + KL), QAT (linear int4, k-means shared centroids), gradual and iterative pruning (with
fine-tuning and with distillation). For each run it records the sha256 of every part's state
dict and the loss history (wall-clock ``seconds`` left out).

    python bench/trainer_regression.py --write   # record bench/results/trainer_regression.json
    python bench/trainer_regression.py           # run again and compare; exit 1 on a difference

The reference was written on commit c9cbedb (before the one-trainer refactor), CPU, 1 thread.
Nothing here is a quality number: it only proves the refactor trains the same models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

RESULT = Path(__file__).parent / "results" / "trainer_regression.json"


def digest(module: nn.Module) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def history_of(folder: Path) -> list[dict[str, float]]:
    meta = json.loads((folder / "state.json").read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in meta["history"]]


def tiny_gan():  # the test suite's tiny_gan fixture
    from tests.conftest import make_tiny_gan

    return make_tiny_gan()


def tiny_vae():
    from slimgen.models import ModelBundle, VAEDecoder, VAEEncoder

    torch.manual_seed(0)
    ek = {"nz": 4, "channels": 1, "image_size": 28, "widths": [8, 16]}
    dk = {"nz": 4, "channels": 1, "image_size": 28, "widths": [16, 8]}
    dec, enc = VAEDecoder(**dk), VAEEncoder(**ek)
    dec.train()(torch.randn(16, 4))
    return ModelBundle.from_modules("vae", {"generator": dec.eval(), "encoder": enc.eval()},
                                    {"generator": dk, "encoder": ek}, latent_dim=4, image_shape=(1, 28, 28))


def images():
    from slimgen.data import ImageSet

    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.rand(256, 1, 28, 28, generator=g).mul(2).sub(1), torch.arange(256) % 4, "random")


def weight_score(generator: nn.Module) -> float:
    """A cheap deterministic 'score' that differs per epoch, so best-epoch selection is exercised."""
    with torch.no_grad():
        return float(sum(p.float().sin().sum() for p in generator.parameters()))


def record(bundle, folder: Path | None) -> dict:
    out = {"parts": {name: digest(m) for name, m in sorted(bundle.parts.items())}}
    if folder is not None:
        out["history"] = history_of(folder)
    last = bundle.steps[-1] if bundle.steps else {}
    out["best_epoch"] = last.get("best_epoch")
    return out


def runs() -> dict[str, Callable[[Path], dict]]:
    from slimgen.distill import Distillation, DistillLosses, distill, slim_student
    from slimgen.prune import ChannelPruning, MagnitudePruning, SparsityTraining, penalty_for, prune
    from slimgen.prune.schedules import GradualPruning, IterativePruning, prune_gradually, prune_iteratively
    from slimgen.quantize import KMeansQuant, LinearQuant, QuantAwareTraining, quantize
    from slimgen.train import ClassifierTraining, ConditionalDCGANTraining, DCGANTraining, VAETraining, train
    from slimgen.train.finetune import FineTuning, finetune

    data = images()
    ft = FineTuning(epochs=2, steps_per_epoch=3, batch_size=16, teacher_weight=2.0, lr=1e-3)

    def train_run(config):
        def go(tmp: Path) -> dict:
            b = train(config, out=tmp / "m", data=data, steps_per_epoch=3, device="cpu", precision="fp32")
            return record(b, tmp / "m" / "checkpoint")
        return go

    def finetune_run(tmp: Path) -> dict:
        teacher = tiny_gan()
        pruned = prune(teacher, MagnitudePruning(sparsity=0.6))
        b = finetune(pruned, ft, data=data, teacher=teacher, score=weight_score,
                     penalty=penalty_for(SparsityTraining(l1_weight=1e-4)), checkpoint_dir=tmp, device="cpu")
        return record(b, tmp)

    def finetune_channels(tmp: Path) -> dict:
        teacher = tiny_gan()
        b = finetune(prune(teacher, ChannelPruning(ratio=0.5)), ft, data=data, teacher=teacher, checkpoint_dir=tmp,
                     device="cpu")
        return record(b, tmp)

    def distill_gan(tmp: Path) -> dict:
        teacher = tiny_gan()
        losses = DistillLosses(output=1.0, feature=0.5, perceptual=0.5, adversarial=0.1)
        config = Distillation(epochs=2, steps_per_epoch=3, batch_size=16, lr=1e-3, losses=losses, extractor="random:1")
        b = distill(slim_student(teacher, 0.5, seed=1), teacher, config, data=data, checkpoint_dir=tmp,
                    score=weight_score, device="cpu")
        return record(b, tmp)

    def distill_sparse_datafree(tmp: Path) -> dict:
        teacher = tiny_gan()
        config = Distillation(epochs=2, steps_per_epoch=3, batch_size=16, lr=1e-3,
                              losses=DistillLosses(output=1.0, output_loss="l2"))
        b = distill(prune(teacher, MagnitudePruning(sparsity=0.5)), teacher, config, checkpoint_dir=tmp, device="cpu")
        return record(b, tmp)

    def distill_vae(tmp: Path) -> dict:
        teacher = tiny_vae()
        student = slim_student(teacher, 0.5, seed=1)
        config = Distillation(epochs=2, steps_per_epoch=3, batch_size=16, lr=1e-3,
                              losses=DistillLosses(output=1.0, vae_recon=0.5, vae_kl=0.1))
        b = distill(student, teacher, config, data=data, checkpoint_dir=tmp, device="cpu")
        return record(b, tmp)

    def distill_vae_frozen_encoder(tmp: Path) -> dict:
        teacher = tiny_vae()
        config = Distillation(epochs=1, steps_per_epoch=3, batch_size=16, lr=1e-3,
                              losses=DistillLosses(output=0.0, vae_recon=1.0))
        b = distill(slim_student(teacher, 0.5, seed=2), teacher, config, data=data, checkpoint_dir=tmp, device="cpu")
        return record(b, tmp)

    def qat_linear(tmp: Path) -> dict:
        config = QuantAwareTraining(weights=LinearQuant(bits=4), epochs=2, steps_per_epoch=3, batch_size=16, lr=1e-3)
        b = quantize(tiny_gan(), config, data=data, checkpoint_dir=tmp, device="cpu", score=weight_score)
        return record(b, tmp)

    def qat_kmeans(tmp: Path) -> dict:
        config = QuantAwareTraining(weights=KMeansQuant(bits=2, finetune_centroids=True), epochs=1, steps_per_epoch=3,
                                    batch_size=16, lr=1e-3)
        b = quantize(tiny_gan(), config, data=data, checkpoint_dir=tmp, device="cpu")
        return record(b, tmp)

    def gradual(tmp: Path) -> dict:
        config = GradualPruning(sparsity=0.8, end_step=5, frequency=2)
        b = prune_gradually(tiny_gan(), config, FineTuning(epochs=2, steps_per_epoch=3, batch_size=16), data=data,
                            score=weight_score, checkpoint_dir=tmp, device="cpu")
        return record(b, tmp)

    def iterative_finetune(tmp: Path) -> dict:
        b = prune_iteratively(tiny_gan(), ChannelPruning(ratio=0.5), IterativePruning(steps=2),
                              FineTuning(epochs=1, steps_per_epoch=2, batch_size=16), data=data, work_dir=tmp,
                              device="cpu")
        return record(b, tmp / "round-1-checkpoint")

    def iterative_distill(tmp: Path) -> dict:
        b = prune_iteratively(tiny_gan(), MagnitudePruning(sparsity=0.7), IterativePruning(steps=2),
                              Distillation(epochs=1, steps_per_epoch=2, batch_size=16), data=data, work_dir=tmp,
                              device="cpu")
        return record(b, tmp / "round-1-checkpoint")

    return {
        "train_dcgan": train_run(DCGANTraining(epochs=2, batch_size=16, latent_dim=8, generator_widths=[16, 8],
                                               discriminator_widths=[8, 16])),
        "train_cdcgan": train_run(ConditionalDCGANTraining(epochs=1, batch_size=16, latent_dim=8, embed_dim=4,
                                                           generator_widths=[16, 8], discriminator_widths=[8, 16])),
        "train_vae": train_run(VAETraining(epochs=2, batch_size=16, latent_dim=4)),
        "train_classifier": train_run(ClassifierTraining(dataset="random", epochs=1, batch_size=16)),
        "finetune_sparse_teacher_penalty_best": finetune_run,
        "finetune_channels": finetune_channels,
        "distill_output_feature_perceptual_adv": distill_gan,
        "distill_sparse_datafree_l2": distill_sparse_datafree,
        "distill_vae_recon_kl": distill_vae,
        "distill_vae_frozen_encoder": distill_vae_frozen_encoder,
        "qat_linear4": qat_linear,
        "qat_kmeans_centroids": qat_kmeans,
        "gradual_prune": gradual,
        "iterative_finetune": iterative_finetune,
        "iterative_distill": iterative_distill,
    }


def run_all(only: list[str] | None = None) -> dict[str, dict]:
    torch.set_num_threads(1)
    results = {}
    for name, go in runs().items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = go(Path(tmp))
        print(f"{name}: {results[name]['parts']}", file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="record the reference instead of comparing")
    parser.add_argument("--only", nargs="*", help="run only these named runs")
    args = parser.parse_args()
    results = run_all(args.only)
    if args.write:
        RESULT.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"wrote {RESULT}")
        return 0
    reference = json.loads(RESULT.read_text())
    bad = [name for name, r in results.items() if r != reference.get(name)]
    for name in results:
        print(f"{'DIFFERS' if name in bad else 'same   '} {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

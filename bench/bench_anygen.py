"""Any-generator benchmark -> bench/results/anygen.md (+ anygen.json).

    python bench/bench_anygen.py tutorial --checkpoint runs/tutorial64/tutorial_dcgan.pt [-n 2000] [--threads 1]
    python bench/bench_anygen.py conditional [--model zoo:cdcgan-fmnist] [-n 1000] [--threads 1]

**tutorial**: the 64x64 PyTorch-DCGAN-tutorial generator of bench/tutorial_dcgan.py (trained by
slimgen, read from the tutorial's checkpoint dict ``netG_state_dict``), treated as
generator-only: no discriminator, no data. Rows: the fp32 teacher; int8 weights; channels 75%
(L1 importance, no data needed); the same + data-free distillation (output L1 to the teacher
on the teacher's own latents, no images); + int8 weights. Quality is teacher-referenced: FID
of the model's samples (latent seed 0) against the teacher's samples on latent seed 1, next to
the noise floor (the teacher's seed 0 against its seed 1) at the same N, and fidelity to the
teacher on the same seed-0 latents (PSNR, SSIM). For scale, the teacher against N Fashion-MNIST
test images resized as its training data was. Feature space: the reporting Fashion-MNIST
classifier (``zoo:fmnist-eval``, :data:`slimgen.evaluate.features.DEFAULT_EXTRACTOR`) on the
images turned grey (channel mean) and resized 64 -> 28 (bilinear, antialiased): the domain
classifier where it fits. Its name is in every table. (The committed anygen.md was measured
before the two feature spaces existed, in ``zoo:fmnist-classifier``, now the training space;
its header says so.)

**conditional**: the class-conditional zoo model. Rows: teacher; int8 weights; channels 50%;
+ data-free distillation; + int8. Per class (``slimgen.evaluate.conditional``): FID against
the Fashion-MNIST test images of that class, FID against the teacher's samples of that class
(latent seed 1), and the accuracy of the reporting classifier (``zoo:fmnist-eval``) on the requested class.

Rows that the library cannot run yet are recorded as "not run" with the reason (the
verb's own error), never filled in. Costs: parameters, MACs per image
(torch.utils.flop_counter), the generator's tensors as stored in model.safetensors (packed).
Resumable per part: each finished part is written to anygen.json at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimgen.evaluate.cost import count_params, stored_bytes
from slimgen.evaluate.features import FeatureExtractor, extract, load_classifier_features
from slimgen.evaluate.fidelity import measure_fidelity
from slimgen.evaluate.quality import fid
from slimgen.evaluate.reference import reference_features
from slimgen.io import write_json, write_text
from slimgen.models import InputSpec, ModelBundle, PartSpec, generate_all, load_folder, save_folder
from slimgen.models.inputs import GenInputs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "anygen.md"
WORK = HERE.parent / "runs" / "bench-anygen"
TUTORIAL_ARCH = "bench.tutorial_dcgan:Generator"


class GreyResized(FeatureExtractor):
    """A 1x28x28 classifier's features for images of any size and channel count.

    Images (N, C, H, W) in [0, 1] -> channel mean (N, 1, H, W) -> bilinear antialiased resize to
    28x28 -> the classifier's penultimate features (N, d); logits from its head.
    """

    def __init__(self, inner: FeatureExtractor) -> None:
        super().__init__()
        self.inner = inner
        self.name = f"{inner.name} (grey, bilinear antialiased resize to 28x28)"
        self.num_features, self.weights_hash, self.class_names = inner.num_features, inner.weights_hash, inner.class_names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().mean(dim=1, keepdim=True)
        return self.inner(F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False))

    def logits(self, features: torch.Tensor) -> torch.Tensor | None:
        return self.inner.logits(features)


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_average_at_start": list(os.getloadavg()), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


@torch.no_grad()
def macs_per_image(g: nn.Module, inputs: GenInputs) -> int:
    """Multiply-accumulates of one forward per image (FLOPs / 2 / batch), ConvTranspose2d counted."""
    g.eval()
    with FlopCounterMode(display=False) as counter:
        g(*inputs.args())
    return int(counter.get_total_flops() // 2 // len(inputs))


def generator_bytes(bundle: ModelBundle, folder: Path) -> int:
    """The generator's tensors as stored (packed) in ``folder``/model.safetensors, after saving ``bundle`` there."""
    save_folder(bundle, folder)
    return stored_bytes(folder / "model.safetensors", prefix="generator.")


def run_row(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One row: its measurements, or ``status: not run`` with the library's error (never a made-up number)."""
    t0 = time.perf_counter()
    try:
        row = fn()
        row["status"] = "measured"
    except Exception as exc:  # a verb that cannot run yet: say so in the table
        traceback.print_exc()
        row = {"status": f"not run: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    row["name"], row["seconds"] = name, round(time.perf_counter() - t0, 1)
    print(f"{name}: {row}", flush=True)
    return row


# --- the tutorial generator ------------------------------------------------------------------------------------


def load_tutorial(checkpoint: Path) -> ModelBundle:
    """The user's checkpoint dict -> a generator-only bundle with the (100, 1, 1) input contract."""
    from bench.tutorial_dcgan import Generator

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["netG_state_dict"]
    g = Generator()
    g.load_state_dict(state)
    return ModelBundle(kind="gan", parts={"generator": g.eval()}, specs={"generator": PartSpec(TUTORIAL_ARCH, {})},
                       image_shape=(3, 64, 64), inputs=InputSpec((100, 1, 1)),
                       steps=[{"step": "import", "weights": str(checkpoint), "key": "netG_state_dict"}])


def distill_data_free(student: ModelBundle, teacher: ModelBundle, *, epochs: int, steps: int,
                      checkpoint_dir: Path) -> ModelBundle:
    """slimgen's distill verb with the output (L1) term only and no data set (the teacher's latents only)."""
    from slimgen.distill import Distillation, DistillLosses, distill
    from slimgen.train import has_checkpoint

    config = Distillation(epochs=epochs, steps_per_epoch=steps, batch_size=64, lr=2e-4,
                          lr_schedule="constant", losses=DistillLosses(output=1.0, adversarial=0.0))
    return distill(student, teacher, config, data=None, checkpoint_dir=checkpoint_dir,  # type: ignore[arg-type]
                   resume=has_checkpoint(checkpoint_dir), device="cpu")


def bench_tutorial(args: argparse.Namespace) -> dict[str, Any]:
    from bench.tutorial_dcgan import fashion_mnist_64
    from slimgen.prune import ChannelPruning, prune
    from slimgen.quantize import LinearQuant, quantize

    work = WORK / "tutorial"
    teacher = load_tutorial(args.checkpoint)
    spec = teacher.inputs
    assert spec is not None
    extractor = GreyResized(load_classifier_features())
    n = args.n
    z0, z1 = spec.draw(n, seed=0), spec.draw(n, seed=1)
    t0_img = generate_all(teacher.generator, z0)
    t0_feat = extract(extractor, t0_img).features
    t1_feat = extract(extractor, generate_all(teacher.generator, z1)).features
    real = fashion_mnist_64("test").subset(n, seed=0)
    floor = fid(t1_feat, t0_feat)

    def measure(bundle: ModelBundle, folder: str) -> dict[str, Any]:
        g = bundle.generator.eval()
        img = generate_all(g, z0)
        fidel = measure_fidelity(img, t0_img)
        return {"params": count_params(g), "macs": macs_per_image(g, z0[:2]),
                "bytes": generator_bytes(bundle, work / folder), "fid_vs_teacher": fid(t1_feat, extract(extractor, img).features),
                "psnr": fidel.psnr, "ssim": fidel.ssim}

    rows: list[dict[str, Any]] = []
    teacher_row = run_row("teacher fp32", lambda: {**measure(teacher, "teacher"), "psnr": None, "ssim": None,
                                                   "fid_vs_real": fid(extract(extractor, real.images).features, t0_feat)})
    rows.append(teacher_row)
    rows.append(run_row("teacher, int8 weights", lambda: measure(quantize(teacher, LinearQuant(bits=8)), "teacher-int8")))
    example = z0[:2].z  # (2, 100, 1, 1)
    pruned: dict[str, ModelBundle] = {}

    def do_prune() -> dict[str, Any]:
        config = ChannelPruning(ratio=0.75, importance="l1")
        g = prune(teacher.generator, config, example_inputs=example)
        pruned["b"] = ModelBundle(kind="gan", parts={"generator": g.eval()}, specs={"generator": PartSpec(TUTORIAL_ARCH, {})},
                                  image_shape=(3, 64, 64), inputs=spec, steps=[*teacher.steps, {"step": "prune"}])
        return measure(pruned["b"], "ch75")

    rows.append(run_row("channels 75% (L1)", do_prune))
    distilled: dict[str, ModelBundle] = {}

    def do_distill() -> dict[str, Any]:
        if "b" not in pruned:
            raise RuntimeError("the pruning row did not run")
        distilled["b"] = distill_data_free(pruned["b"], teacher, epochs=args.epochs, steps=args.steps,
                                           checkpoint_dir=work / "distill-checkpoint")
        return measure(distilled["b"], "ch75-distill")

    rows.append(run_row(f"channels 75% + data-free distillation ({args.epochs}x{args.steps} steps of 64)", do_distill))

    def do_int8() -> dict[str, Any]:
        if "b" not in distilled:
            raise RuntimeError("the distillation row did not run")
        return measure(quantize(distilled["b"], LinearQuant(bits=8)), "ch75-distill-int8")

    rows.append(run_row("channels 75% + distillation + int8 weights", do_int8))
    rows.append(run_row("channels 75% (no distillation) + int8 weights",
                        lambda: measure(quantize(pruned["b"], LinearQuant(bits=8)), "ch75-int8")))
    return {"checkpoint": str(args.checkpoint), "inputs": spec.describe(), "image_shape": [3, 64, 64],
            "extractor": extractor.name, "n": n, "noise_floor_fid": floor,
            "reference": "the teacher's samples on latent seed 1 (models sample latent seed 0)",
            "real_reference": f"{real.name}", "rows": rows}


# --- the class-conditional zoo model -----------------------------------------------------------------------------


def bench_conditional(args: argparse.Namespace) -> dict[str, Any]:
    from slimgen.evaluate.conditional import measure_conditional
    from slimgen.prune import ChannelPruning, prune
    from slimgen.quantize import LinearQuant, quantize

    work = WORK / "conditional"
    teacher = load_folder(args.model)
    spec = teacher.inputs
    assert spec is not None and spec.num_classes is not None
    n = args.n
    z0 = spec.draw(200, seed=0)
    extractor = load_classifier_features()
    test_ref = reference_features(extractor, "fashion-mnist", "test")  # all 10,000 test images

    def measure(bundle: ModelBundle, folder: str, *, vs_teacher: bool = True) -> dict[str, Any]:
        g = bundle.generator.eval()
        real = measure_conditional(g, spec=spec, n_per_class=n, seed=0)
        everything = extract(extractor, generate_all(g, spec.draw(n * spec.num_classes, seed=0))).features
        out: dict[str, Any] = {"fid_all_real": fid(test_ref.features.features, everything),
                               "params": count_params(g), "macs": macs_per_image(g, z0[:2]),
                               "bytes": generator_bytes(bundle, work / folder), "accuracy": real.accuracy,
                               "mean_class_fid_real": real.mean_fid,
                               "per_class": [{"label": s.label, "name": s.name, "fid_real": s.fid, "accuracy": s.accuracy}
                                             for s in real.per_class]}
        if vs_teacher:
            tq = measure_conditional(g, spec=spec, n_per_class=n, seed=0, teacher=teacher.generator)
            out["mean_class_fid_teacher"] = tq.mean_fid
            for row, s in zip(out["per_class"], tq.per_class, strict=True):
                row["fid_teacher"] = s.fid
            fidel = measure_fidelity(generate_all(g, z0), generate_all(teacher.generator, z0))
            out["psnr"], out["ssim"] = fidel.psnr, fidel.ssim
        return out

    rows = [run_row("teacher fp32", lambda: measure(teacher, "teacher", vs_teacher=False))]
    floor = measure_conditional(teacher.generator, spec=spec, n_per_class=n, seed=0, teacher=teacher.generator)
    rows.append(run_row("teacher, int8 weights", lambda: measure(quantize(teacher, LinearQuant(bits=8)), "teacher-int8")))
    stages: dict[str, ModelBundle] = {}

    def do_prune() -> dict[str, Any]:
        stages["pruned"] = prune(teacher, ChannelPruning(ratio=0.5, importance="l1", ignore=("embed",)))
        return measure(stages["pruned"], "ch50")

    def do_distill() -> dict[str, Any]:
        if "pruned" not in stages:
            raise RuntimeError("the pruning row did not run")
        stages["distilled"] = distill_data_free(stages["pruned"], teacher, epochs=args.epochs, steps=args.steps,
                                                checkpoint_dir=work / "distill-checkpoint")
        return measure(stages["distilled"], "ch50-distill")

    def do_int8() -> dict[str, Any]:
        if "distilled" not in stages:
            raise RuntimeError("the distillation row did not run")
        return measure(quantize(stages["distilled"], LinearQuant(bits=8)), "ch50-distill-int8")

    rows.append(run_row("channels 50% (L1)", do_prune))
    rows.append(run_row(f"channels 50% + data-free distillation ({args.epochs}x{args.steps} steps of 64)", do_distill))
    rows.append(run_row("channels 50% + distillation + int8 weights", do_int8))
    return {"model": str(args.model), "inputs": spec.describe(), "n_per_class": n,
            "extractor": extractor.name, "reference_real": "fashion-mnist/test images of the class",
            "reference_teacher": "the teacher's samples of the class, latent seed 1 (models: seed 0)",
            "noise_floor_mean_class_fid": floor.mean_fid,
            "noise_floor_per_class": [s.fid for s in floor.per_class], "rows": rows}


# --- tables ------------------------------------------------------------------------------------------------------


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    if v is None:
        return "-"
    return fmt.format(v) if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def _machine_line(m: dict[str, Any]) -> str:
    return (f"- machine: {m['cpu']}, {m['cores']} cores (shared), {m['threads']} torch thread(s), torch {m['torch']}, "
            f"load average {m['load_average_at_start'][0]:.1f} at start, {m['date']}")


def render(results: dict[str, Any]) -> str:
    lines = ["# Any generator: compression of a user's 64x64 generator and of a class-conditional zoo model", "",
             "Written by `bench/bench_anygen.py` (see its docstring for the method). Rows marked *not run* could not "
             "run with the library at the time of the run; the reason is the library's own error.", ""]
    tut = results.get("tutorial")
    if tut:
        lines += ["## DCGAN-tutorial generator, 3x64x64, generator-only (no discriminator, no data)", "",
                  *([f"- code: {tut['note']}"] if tut.get("note") else []),
                  f"- model: `{TUTORIAL_ARCH}` from `{tut['checkpoint']}` (key `netG_state_dict`); inputs {tut['inputs']}",
                  f"- FID: {tut['extractor']}, N = {tut['n']} per side; reference: {tut['reference']}; "
                  f"**noise floor (teacher seed 0 vs seed 1): {tut['noise_floor_fid']:.2f}**",
                  f"- fidelity: PSNR (dB) / SSIM of each model's images against the teacher's on the same {tut['n']} "
                  "seed-0 latents", _machine_line(tut["machine"]), "",
                  "| model | params | MACs/image | generator bytes | FID vs teacher | PSNR | SSIM | status |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in tut["rows"]:
            lines.append(f"| {r['name']} | {_f(r.get('params'))} | {_f(r.get('macs'))} | {_f(r.get('bytes'))} | "
                         f"{_f(r.get('fid_vs_teacher'), '{:.2f}')} | {_f(r.get('psnr'), '{:.2f}')} | "
                         f"{_f(r.get('ssim'), '{:.3f}')} | {r['status']} |")
        t = tut["rows"][0]
        if t.get("fid_vs_real") is not None:
            lines += ["", f"For scale: the teacher against {tut['n']} images of {tut['real_reference']} in the same "
                      f"feature space: FID {t['fid_vs_real']:.2f}."]
        lines.append("")
    cond = results.get("conditional")
    if cond:
        lines += ["## Class-conditional DCGAN (zoo), 1x28x28, per class", "",
                  *([f"- code: {cond['note']}"] if cond.get("note") else []),
                  f"- model: `{cond['model']}`; inputs {cond['inputs']}",
                  f"- per class: {cond['n_per_class']} samples (latent seed 0); FID on {cond['extractor']} features against "
                  f"{cond['reference_real']} (real) and against {cond['reference_teacher']} (teacher); accuracy: "
                  f"{cond['extractor']} predicts the requested class",
                  f"- FID all classes: {cond['n_per_class'] * 10:,} samples with uniform labels (seed 0) against all "
                  "10,000 Fashion-MNIST test images, same features",
                  f"- noise floor of the teacher-referenced per-class FID (teacher seed 0 vs seed 1): mean "
                  f"{cond['noise_floor_mean_class_fid']:.2f}",
                  _machine_line(cond["machine"]), "",
                  "| model | params | MACs/image | generator bytes | accuracy | FID all classes (real) | "
                  "mean class FID (real) | mean class FID (teacher) | PSNR | SSIM | status |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in cond["rows"]:
            lines.append(f"| {r['name']} | {_f(r.get('params'))} | {_f(r.get('macs'))} | {_f(r.get('bytes'))} | "
                         f"{_f(r.get('accuracy'), '{:.3f}')} | {_f(r.get('fid_all_real'), '{:.2f}')} | "
                         f"{_f(r.get('mean_class_fid_real'), '{:.2f}')} | "
                         f"{_f(r.get('mean_class_fid_teacher'), '{:.2f}')} | {_f(r.get('psnr'), '{:.2f}')} | "
                         f"{_f(r.get('ssim'), '{:.3f}')} | {r['status']} |")
        measured = [r for r in cond["rows"] if r["status"] == "measured"]
        if measured:
            lines += ["", "Per class: accuracy / FID against real images of the class / FID against the teacher's "
                      "samples of the class (noise floor in the header).", ""]
            names = [f"{p['label']} {p['name'] or ''}".strip() for p in measured[0]["per_class"]]
            floor = cond["noise_floor_per_class"]
            lines += ["| class | " + " | ".join(r["name"] for r in measured) + " | noise floor |",
                      "| --- |" + " ---: |" * (len(measured) + 1)]
            for i, name in enumerate(names):
                cells = []
                for r in measured:
                    p = r["per_class"][i]
                    cells.append(f"{p['accuracy']:.3f} / {p['fid_real']:.1f} / {_f(p.get('fid_teacher'))}")
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {floor[i]:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["tutorial", "conditional", "render"])
    ap.add_argument("--checkpoint", type=Path, default=HERE.parent / "runs" / "tutorial64" / "tutorial_dcgan.pt")
    ap.add_argument("--model", default="zoo:cdcgan-fmnist")
    ap.add_argument("-n", type=int, default=None, help="samples per side (tutorial 2000) or per class (conditional 1000)")
    ap.add_argument("--epochs", type=int, default=3, help="distillation epochs")
    ap.add_argument("--steps", type=int, default=100, help="distillation steps per epoch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note", default="", help="what code ran (e.g. a branch not yet merged), shown in the table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    store = RESULTS.with_suffix(".json")
    results = json.loads(store.read_text()) if store.exists() else {}
    if args.part != "render":
        args.n = args.n or (2000 if args.part == "tutorial" else 1000)
        info = machine()
        part = bench_tutorial(args) if args.part == "tutorial" else bench_conditional(args)
        results[args.part] = {**part, "machine": info, "note": args.note}
        write_json(store, results)
    write_text(RESULTS, render(results))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Quantization benchmark on a DCGAN teacher -> bench/results/quantize.md (+ quantize.json).

    .venv/bin/python bench/bench_quantize.py [--model zoo:dcgan-fmnist] [-n 10000] [--threads 2]
        [--qat-epochs 4] [--qat-steps 300] [--only ROW ...]

Rows: the fp32 teacher, int8 weights + activations post-training (the int8 ONNX QDQ model
that ONNX Runtime runs, FID measured on it), int8/int4 linear weights (per channel, per
tensor), int4 with quantization-aware training, k-means 4 bit (packed and lzma-coded) and the
naive tutorial formula at 8 and 4 bits. Each row is a recipe (``WEIGHT_ROWS``, ``QAT_ROWS``, the
int8 W+A steps) run by slimgen's pipeline runner into runs/bench-quantize/ROW (resumable, every
step a model folder, evaluated by slimgen.evaluate on the same seed-0 latents for every row: FID
in the reporting space and in the training space, PSNR against the teacher on those latents).
Bytes: the generator's Conv/ConvT/Linear weights as stored in model.safetensors (packed codes +
scales or codebooks), and the whole generator.

Latency: PyTorch fp32, ONNX fp32, ONNX int8 (ConvTranspose rewritten to Conv + PixelShuffle,
real QLinearConv) and ONNX int8 without the rewrite (QDQ ConvTranspose), batch 1 and 64,
all in this one process, medians of repeated runs after warm-up.

Resumable: finished rows are kept in quantize.json and skipped on the next run; a row cut short
resumes in its recipe run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from recipe_rows import run_recipe, slug

from slimgen.evaluate.cost import stored_bytes
from slimgen.export import ONNX_NAME, OnnxGenerator, export_onnx
from slimgen.export.onnx import export_fp32, quantize_onnx_int8
from slimgen.models import ModelBundle, calibration_inputs, load_folder, sample_latents
from slimgen.quantize import ActivationQuant, quantizable_weights

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "quantize.md"
WORK = HERE.parent / "runs" / "bench-quantize"


def _sizes(folder: Path, bundle: ModelBundle) -> dict[str, int]:
    """Stored bytes of the generator's quantizable weights and of the whole generator."""
    st = folder / "model.safetensors"
    names = [f"generator.{n}" for n, _, _ in quantizable_weights(bundle.generator)]
    return {"weight_bytes": sum(stored_bytes(st, prefix=n + ".__") + stored_bytes_exact(st, n) for n in names),
            "generator_bytes": stored_bytes(st, prefix="generator.")}


def stored_bytes_exact(path: Path, name: str) -> int:
    """Bytes of the tensor stored under exactly ``name`` (a dense tensor), 0 if absent."""
    return stored_bytes(path, prefix=name) - stored_bytes(path, prefix=name + ".")


def _entropy_info(folder: Path) -> dict[str, int]:
    cfg = json.loads((folder / "config.json").read_text())["tensors"]
    return {"index_bytes_packed": sum(m.get("packed_bytes", 0) for m in cfg.values()),
            "index_bytes_stored": sum(m.get("stored_index_bytes", 0) for m in cfg.values()),
            "index_bytes_entropy_bound": sum(m.get("entropy_bytes", 0) for m in cfg.values())}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.teacher = load_folder(args.model)
        self.nz = int(self.teacher.latent_dim)
        self.state_path = args.out.with_suffix(".json")
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.state.setdefault("rows", {})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.work.mkdir(parents=True, exist_ok=True)

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=2) + "\n")
        self.args.out.write_text(render(self.state, self.args))

    def row(self, name: str, make: Callable[[], dict[str, Any]]) -> None:
        if name in self.state["rows"] and not (self.args.only and name in self.args.only):
            print(f"[skip] {name}: done")
            return
        if self.args.only and name not in self.args.only:
            return
        t0 = time.perf_counter()
        result = make()
        result["seconds"] = round(time.perf_counter() - t0, 1)
        self.state["rows"][name] = result
        self.save()
        print(f"[done] {name}: {result}")

    def recipe_row(self, name: str, steps: list[dict[str, Any]], note: str | None = None) -> dict[str, Any]:
        """Run the row's recipe with slimgen's pipeline runner (validated, resumable, one folder per step) and
        read the table's figures off its last step: the exported int8 ONNX model's where it exported one."""
        out = self.args.work / slug(name)
        result = run_recipe(self.args.model, steps, out, n=self.args.n, overwrite=name in self.args.only)
        return self.figures(result.rows[-1], result.final, note=note)

    def figures(self, row: dict[str, Any], folder: Path, *, note: str | None = None) -> dict[str, Any]:
        """A table row: sizes from the model folder, quality from the runner's row (the ONNX model's if exported)."""
        onnx = row.get("onnx_fid") is not None
        result = {**_sizes(folder, load_folder(folder)), "folder": str(folder),
                  "fid": row.get("onnx_train_fid" if onnx else "train_fid"),  # the training space, as before
                  "fid_reporting": row.get("onnx_fid" if onnx else "fid"),
                  "psnr_db": _psnr(row.get("onnx_psnr" if onnx else "psnr")), "n": row.get("n"),
                  "extractor": row.get("extractor"),
                  "runtime": "onnxruntime (the exported model.onnx)" if onnx else row.get("runtime")}
        if onnx:
            result["onnx_bytes"] = (folder / ONNX_NAME).stat().st_size
        if note:
            result["runs" if onnx else "qat"] = note
        if any(e.codec == "codebook" for e in load_folder(folder).encodings.values()):
            result.update(_entropy_info(folder))
        return result


def _psnr(value: Any) -> float | None:
    """dB rounded; an identical model's "inf" as None (the table leaves it empty)."""
    return None if value in (None, "inf") else round(float(value), 2)


# int4 everywhere except the image output layer (1 output channel: one scale for all its weights;
# 1,024 of the teacher's 533,889 weights) at int8
INT4_MIXED = {"method": "linear", "bits": 4, "scale": "mse", "output_layer_bits": 8}
WEIGHT_ROWS: dict[str, dict[str, Any]] = {
    "int8 weights per-channel": {"method": "linear", "bits": 8},
    "int4 weights per-channel": {"method": "linear", "bits": 4},
    "int4 weights per-channel, MSE scale": {"method": "linear", "bits": 4, "scale": "mse"},
    "int4 weights per-tensor": {"method": "linear", "bits": 4, "per_channel": False},
    "int4 weights per-channel, MSE scale, output layer int8": INT4_MIXED,
    "k-means 4-bit": {"method": "kmeans", "bits": 4},
    "k-means 4-bit + lzma indices": {"method": "kmeans", "bits": 4, "entropy_coding": "lzma"},
    "k-means 2-bit + lzma indices": {"method": "kmeans", "bits": 2, "entropy_coding": "lzma"},
    "naive 8-bit": {"method": "naive", "bits": 8},
    "naive 4-bit": {"method": "naive", "bits": 4},
}
QAT_ROWS: dict[str, dict[str, Any]] = {  # quantize_aware's weights (the recipe tells the two schemes by their keys)
    "int4 weights per-channel + QAT": {"bits": 4},
    "int4 weights per-channel, MSE scale, output layer int8 + QAT": {k: v for k, v in INT4_MIXED.items() if k != "method"},
    "k-means 4-bit + lzma, centroids fine-tuned (QAT)": {"bits": 4, "finetune_centroids": True, "entropy_coding": "lzma"},
}


def quality_rows(b: Bench) -> None:
    def teacher() -> dict[str, Any]:  # the 00-teacher row of the first recipe run
        first = b.args.work / slug(next(iter(WEIGHT_ROWS)))
        run_recipe(b.args.model, [{"quantize": {"weights": WEIGHT_ROWS[next(iter(WEIGHT_ROWS))]}}], first, n=b.args.n)
        return b.figures(json.loads((first / "00-teacher" / "metrics.json").read_text()), first / "00-teacher")

    b.row("fp32 teacher", teacher)
    for observer in ("percentile", "minmax"):
        name = "int8 W+A post-training (ONNX int8)" + ("" if observer == "percentile" else ", min/max observer")
        config = ActivationQuant(observer=observer)
        note = (f"ONNX Runtime int8 QDQ (QLinearConv), {observer} observer"
                + (f" {config.percentile}" if observer == "percentile" else "")
                + f", 512 calibration latents{', image output layer fp32' if config.float_output_layer else ''}")
        b.row(name, lambda observer=observer, name=name, note=note: b.recipe_row(name, [
            {"quantize": {"activations": {"observer": observer, "calibration": 512}}},
            {"export": {"formats": ["onnx"], "int8": True}}], note))
    for name, weights in WEIGHT_ROWS.items():
        b.row(name, lambda name=name, weights=weights: b.recipe_row(name, [{"quantize": {"weights": weights}}]))
    a = b.args
    qat_note = (f"QAT {a.qat_epochs} epochs x {a.qat_steps or 'all'} steps of 64, lr {a.qat_lr}, L1 to teacher "
                f"{a.qat_teacher_weight:g}, best epoch by FID(2000, seed 1) in the training space")
    for name, weights in QAT_ROWS.items():
        step = {"quantize_aware": {"weights": weights, "epochs": a.qat_epochs, "steps_per_epoch": a.qat_steps,
                                   "lr": a.qat_lr, "teacher_weight": a.qat_teacher_weight}}
        b.row(name, lambda name=name, step=step: b.recipe_row(name, [step], qat_note))


def latency_rows(b: Bench) -> None:
    def make() -> dict[str, Any]:
        threads = b.args.threads
        torch.set_num_threads(threads)
        g = b.teacher.generator.eval()
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_fp32(g, Path(tmp) / "fp32.onnx", b.nz)
            calib = calibration_inputs(b.teacher.inputs, 512)  # the calibration contract's inputs
            int8 = export_onnx(b.teacher, Path(tmp) / "int8.onnx", int8=True, calibration=calib)
            no_rewrite = quantize_onnx_int8(fp32, Path(tmp) / "int8-convt.onnx", calib)
            sessions = {"ONNX fp32": OnnxGenerator(fp32, threads=threads), "ONNX int8": OnnxGenerator(int8, threads=threads),
                        "ONNX int8, no rewrite (QDQ ConvTranspose)": OnnxGenerator(no_rewrite, threads=threads)}
            z_eval = sample_latents(1000, b.nz, seed=0)
            with torch.no_grad():
                ref = g(z_eval)
            out: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "ort_intra_op_threads": threads,
                                   "load_average_before": round(os.getloadavg()[0], 2),
                                   "onnx_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}}
            for name in ("ONNX int8", "ONNX int8, no rewrite (QDQ ConvTranspose)"):
                mse = (sessions[name](z_eval) - ref).pow(2).mean()
                out.setdefault("psnr_db_vs_fp32", {})[name] = round(float(10 * torch.log10(4 / mse)), 2)
            for batch in (1, 64):
                z = sample_latents(batch, b.nz, seed=7)
                zn = z.numpy()
                calls: dict[str, Callable[[], object]] = {"PyTorch fp32": lambda z=z: g(z)}
                calls.update({name: (lambda s=s, zn=zn: s.run_numpy(zn)) for name, s in sessions.items()})
                out[f"batch{batch}_ms"] = interleaved_medians(calls, repeats=b.args.repeats)
            out["load_average_after"] = round(os.getloadavg()[0], 2)
            return out

    b.row(f"latency, {b.args.threads} thread(s)", make)


@torch.no_grad()
def interleaved_medians(calls: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 5,
                        rounds: int = 5) -> dict[str, float]:
    """Median ms per call of each callable, timed in ``rounds`` rounds of blocks of calls (each runtime
    once per round), so that load from other processes falls on every runtime alike while thread
    pools stay warm within a block."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    per_block = max(1, repeats // rounds)
    for _ in range(rounds):
        for name, fn in calls.items():
            fn()  # re-warm this runtime's threads after the others ran
            for _ in range(per_block):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: round(statistics.median(ts), 3) for name, ts in times.items()}


def _fmt_bytes(v: int | None) -> str:
    return "" if v is None else f"{v:,}"


def render(state: dict[str, Any], args: argparse.Namespace) -> str:
    rows = state["rows"]
    teacher = rows.get("fp32 teacher", {})
    t_fid, t_w = teacher.get("fid"), teacher.get("weight_bytes")
    lines = [
        "# Quantization benchmark", "",
        f"Model `{args.model}`; generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} on "
        f"{platform.machine()} ({platform.processor() or 'cpu'}), torch {torch.__version__}. "
        f"`.venv/bin/python bench/bench_quantize.py` (resumable; rows in `quantize.json`).", "",
        f"FID: `slimgen.evaluate.evaluate` (through the recipe runner), n={args.n} samples on seed-0 latents (the "
        "same for every row) against the 10,000 Fashion-MNIST test images, in the training space "
        "(zoo:fmnist-classifier, the column the table has always had; the QAT rows select their best epoch in it) "
        "and in the reporting space (zoo:fmnist-eval, which nothing here trains or selects in). Rows measured before "
        "2026-12-02 have no reporting-space figure (they ran before the rows were recipes). "
        "Weight bytes: the generator's Conv/ConvTranspose/Linear weights as stored in model.safetensors "
        "(packed codes + per-channel scales, or codebook + indices); generator bytes: every generator tensor "
        "(BatchNorm and biases stay fp32). PSNR: generator outputs against the fp32 teacher's on the FID latents "
        "(before 2026-12-02: 1,000 seed-0 latents; images in [-1, 1], peak-to-peak 2). The int8 W+A rows' FID and "
        "PSNR are measured on the exported int8 ONNX model run by ONNX Runtime.", "",
        "| method | FID (training space) | FID / teacher | FID reporting space / teacher | PSNR vs fp32 (dB) "
        "| weight bytes | x smaller | generator bytes | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    t_rep = teacher.get("fid_reporting")
    for name, r in rows.items():
        if name.startswith("latency"):
            continue
        fid = r.get("fid")
        ratio = f"{fid / t_fid:.3f}" if fid is not None and t_fid else ""
        smaller = f"{t_w / r['weight_bytes']:.2f}" if t_w and r.get("weight_bytes") else ""
        notes = []
        if "index_bytes_stored" in r:
            notes.append(f"indices {r['index_bytes_packed']:,} B packed -> {r['index_bytes_stored']:,} B stored "
                         f"(order-0 entropy bound {r['index_bytes_entropy_bound']:,} B)")
        for key in ("runs", "qat"):
            if key in r:
                notes.append(str(r[key]))
        if "onnx_bytes" in r:
            notes.append(f"model.onnx {r['onnx_bytes']:,} B")
        psnr = r.get("psnr_db")
        rep = r.get("fid_reporting")
        rep_ratio = f"{rep / t_rep:.3f}" if rep is not None and t_rep else ""
        lines.append(f"| {name} | {'' if fid is None else f'{fid:.3f}'} | {ratio} | {rep_ratio} | {'' if psnr is None else psnr} "
                     f"| {_fmt_bytes(r.get('weight_bytes'))} "
                     f"| {smaller} | {_fmt_bytes(r.get('generator_bytes'))} | {'; '.join(notes)} |")
    for lat_name, lat in rows.items():
        if not lat_name.startswith("latency"):
            continue
        lines += ["", f"## Latency, {lat['torch_threads']} thread(s) (one process run)", "",
                  f"Median ms per call after 5 warm-up calls, {args.repeats} calls each, timed in 5 rounds of blocks "
                  f"across the runtimes (so load from other processes hits all alike); 1-minute load average "
                  f"{lat.get('load_average_before')} before, {lat.get('load_average_after')} after; torch.get_num_threads() = "
                  f"{lat['torch_threads']}, ONNX Runtime intra-op threads = {lat['ort_intra_op_threads']} "
                  "(2 CPU cores shared with other jobs).", "",
                  "| runtime | batch 1 (ms) | batch 64 (ms) | speed-up vs PyTorch fp32 at 64 | vs ONNX fp32 at 64 |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        b1, b64 = lat["batch1_ms"], lat["batch64_ms"]
        for name in b1:
            lines.append(f"| {name} | {b1[name]:.3f} | {b64[name]:.3f} | {b64['PyTorch fp32'] / b64[name]:.2f}x "
                         f"| {b64['ONNX fp32'] / b64[name]:.2f}x |")
        lines += ["", "Output PSNR vs PyTorch fp32 on 1,000 seed-0 latents (images in [-1, 1], peak-to-peak 2): "
                  + ", ".join(f"{k}: {v} dB" for k, v in lat["psnr_db_vs_fp32"].items())
                  + f". ONNX file bytes: fp32 {lat['onnx_bytes']['fp32']:,}, int8 {lat['onnx_bytes']['int8']:,}."]
    return "\n".join(lines + NOTES) + "\n"


NOTES = [
    "", "## How to read this", "",
    "- Stored bytes are what `model.safetensors` holds: int8 codes one per byte, int4 two per byte, k-means "
    "indices packed at `bits` per index (or lzma-coded, the smallest of packed/one-byte-per-index/plain), "
    "plus per-channel float32 scales or a float32 codebook per tensor. The naive formula can produce "
    "2^b + 1 levels, so its codes need b + 1 bits.",
    "- ONNX int8 = the generator with every int8 ConvTranspose2d rewritten exactly (1x1-input layer -> Linear, "
    "stride-2 k=4 p=1 -> 2x2 per-phase Conv2d + PixelShuffle + 1-pixel crop; the image output layer, fp32 by "
    "default, stays a ConvTranspose), BatchNorm folded, a clamp at +-8 before the Tanh where the last layer is "
    "int8 (exact to 2.3e-7; keeps the int8 grid of the last layer where the Tanh is steep), "
    "then ONNX Runtime static QDQ quantization (int8 per-channel weights, uint8 activations). ONNX Runtime "
    "fuses it into QGemm + QLinearConv. The \"no rewrite\" row quantizes the original graph (QDQ "
    "ConvTranspose runs dequantize + float) and has no pre-Tanh clamp, hence its lower PSNR.",
    "- Latency tables are only comparable within a table. With other jobs on the two cores, PyTorch's "
    "OpenMP pool at 2 threads can stall for a scheduler slice per call (batch-1 medians of ~100+ ms); "
    "the 1-thread table is the cleaner comparison of the kernels.",
    "- QAT: fake quantization (straight-through estimator; for k-means, trainable shared centroids) as "
    "torch.nn.utils.parametrize parametrizations, trained with slimgen.train.finetune (adversarial loss + "
    "L1 to the fp32 teacher on the same latents), then quantized for real.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:dcgan-fmnist")
    ap.add_argument("-n", type=int, default=10000, help="FID samples")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--qat-epochs", type=int, default=4)
    ap.add_argument("--qat-steps", type=int, default=300, help="batches per QAT epoch (0 = one pass over the data)")
    ap.add_argument("--qat-lr", type=float, default=5e-5)
    ap.add_argument("--qat-teacher-weight", type=float, default=100.0, help="weight of the L1 loss to the teacher's images")
    ap.add_argument("--only", nargs="*", default=[], help="run (or re-run) only these rows")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--work", type=Path, default=WORK, help="model folders of every row")
    args = ap.parse_args()
    args.qat_steps = args.qat_steps or None
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    latency_rows(bench)
    quality_rows(bench)
    bench.save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

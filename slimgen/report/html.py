"""One self-contained ``report.html`` per run (images embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from slimgen.io import read_json, write_text
from slimgen.models import load_folder
from slimgen.runtime import engine_for
from slimgen.sample import image_grid, sample_uint8

COLUMNS = [("step", "step", "{}"), ("params", "params", "{:,}"), ("nonzero_params", "non-zero", "{:,}"),
           ("macs", "MACs / image", "{:,}"), ("weight_bytes", "stored bytes", "{:,}"),
           ("latency_ms_b1", "ms @ b1", "{:.2f}"), ("latency_ms_b64", "ms @ b64", "{:.2f}"),
           ("onnx_latency_ms_b64", "ONNX ms @ b64", "{:.2f}"),
           ("fid", "FID", "{:.3f}"), ("kid_mean", "KID", "{:.4f}"), ("precision", "precision", "{:.3f}"),
           ("recall", "recall", "{:.3f}"), ("psnr", "PSNR vs teacher (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
           ("onnx_fid", "FID of model.onnx", "{:.3f}"), ("onnx_psnr", "PSNR of model.onnx (dB)", "{:.2f}"),
           ("train_fid", "FID in the training space", "{:.3f}"), ("onnx_train_fid", "model.onnx FID, training space", "{:.3f}")]
PARETO = [("macs", "MACs per image"), ("weight_bytes", "stored weight bytes"), ("latency_ms_b64", "latency @ batch 64 (ms)")]


def _fmt(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return html.escape(str(value))


def _png(fig_or_array: Any) -> str:
    buf = io.BytesIO()
    if isinstance(fig_or_array, np.ndarray):
        from PIL import Image

        Image.fromarray(fig_or_array).save(buf, format="PNG")
    else:
        fig_or_array.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pareto_plots(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(title, data URI) per cost axis: FID against MACs, stored bytes and latency, every step marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    for key, label in PARETO:
        pts = [(r[key], r["fid"], r["step"]) for r in rows if r.get(key) is not None and r.get("fid") is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for i, (x, y, name) in enumerate(pts):
            ax.scatter([x], [y], s=60 if i == 0 else 36, marker="*" if i == 0 else "o", zorder=3)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="0.75", lw=0.8, zorder=1)
        ax.set_xscale("log")
        ax.set_xlabel(label + " (log)")
        ax.set_ylabel("FID (lower is better)")
        ax.grid(alpha=0.3)
        plots.append((f"FID vs {label}", _png(fig)))
        plt.close(fig)
    return plots


def sample_grids(out: Path, rows: list[dict[str, Any]], *, n: int = 36, seed: int = 1234) -> list[tuple[str, str]]:
    """A grid per step from the same ``n`` latents (seed ``seed``), teacher first."""
    grids = []
    for row in rows:
        folder = out / row["step"]
        if not (folder / "config.json").is_file():
            continue
        bundle = load_folder(folder)
        images = sample_uint8(bundle, n, seed=seed, generator=engine_for(bundle.generator, bundle.meta))  # as the model runs
        grids.append((row["step"], _png(image_grid(images, ncol=6))))
    return grids


def write_report(out: str | Path) -> Path:
    """(Re)build ``out/report.html`` from ``out/summary.json`` and the step folders."""
    out = Path(out)
    rows: list[dict[str, Any]] = read_json(out / "summary.json")
    table = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r, k, f)}</td>" for k, _, f in COLUMNS) + "</tr>" for r in rows)
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in COLUMNS)
    plots = "".join(f'<figure><img src="{uri}" alt="{html.escape(t)}"><figcaption>{html.escape(t)}</figcaption></figure>'
                    for t, uri in pareto_plots(rows))
    grids = "".join(f'<figure><img src="{uri}" alt="samples of {html.escape(t)}" class="grid">'
                    f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, uri in sample_grids(out, rows))
    first = rows[0]
    latency = first.get("latency_run") or f"median of repeated runs after warm-up, {first.get('threads', '?')} threads"
    train_space = (first.get("training_space") or {}).get("extractor")
    how = (f"Quality: FID, KID, precision and recall in the reporting feature space of "
           f"<code>{html.escape(str(first.get('extractor')))}</code>, which no training loss or best-epoch selection used"
           + (f"; 'FID in the training space' is the same in <code>{html.escape(str(train_space))}</code>, the space "
              "the perceptual term and best-epoch selection used (a gap between the two is a model that learned the "
              "scoring space rather than the images)" if train_space else "") + ", "
           f"{first.get('n')} generated samples from latent seed {first.get('seed')} against "
           f"<code>{html.escape(str(first.get('reference')))}</code>. Fidelity: PSNR and SSIM of each step's images vs "
           "the teacher's on the same latents. Export steps: FID and PSNR of the exported model.onnx itself, run in ONNX "
           "Runtime on the same latents (the int8 model where int8 was exported). "
           "MACs per image from torch.utils.flop_counter (FLOPs / 2). Stored bytes: "
           "the size of model.safetensors as written (packing and sparsity count). Latency (ms per call, of each model as it "
           "runs: its int8 graph where it was quantized with int8 activations; ONNX: its exported model.onnx in ONNX Runtime): "
           f"{html.escape(str(latency))}. "
           "Samples and sample grids are generated as each model runs (the same runtime). "
           "Sample grids: the same 36 latents (seed 1234) for every step.")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>slimgen run: {html.escape(out.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:8px;text-align:center}}img.grid{{image-rendering:pixelated;width:220px}}</style></head>
<body><h1>slimgen run <code>{html.escape(out.name)}</code></h1>
<h2>Summary</h2><table><thead><tr>{head}</tr></thead><tbody>{table}</tbody></table>
<h2>Quality vs cost</h2>{plots}
<h2>Samples on the same latents</h2>{grids}
<h2>How each number was measured</h2><p>{how}</p></body></html>
"""
    path = out / "report.html"
    write_text(path, page)
    return path

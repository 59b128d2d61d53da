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
from slimgen.report.pareto import draw_front, plot_frontier, read_frontier, summary_points
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
PARETO = [("macs", "MACs x fewer than the teacher"), ("weight_bytes", "stored bytes x fewer than the teacher"),
          ("latency_ms_b64", "speed-up @ batch 64 vs the teacher")]


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
    """(title, data URI) per cost axis: FID / teacher against MACs, stored bytes and latency as "x fewer
    than the teacher" (log), every step marked, the steps on the Pareto front filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    for key, label in PARETO:
        points = summary_points(rows, key)
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.6))
        draw_front(ax, points, label)
        plots.append((f"FID / teacher vs {label}", _png(fig)))
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
           "Sample grids: the same 36 latents (seed 1234) for every step. "
           "Quality vs cost: each step's FID over the teacher's (same space, samples and seed) against the teacher's "
           "cost over the step's; filled points are on the Pareto front (no other step has both fewer costs and a "
           "lower FID), hollow ones are dominated.")
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


def run_rows(runs: list[Path]) -> list[dict[str, Any]]:
    """Frontier rows (``label``, ``macs_x``, ``bytes_x``, ``fid_ratio``, ...) of runs written by ``slimgen compress``:
    the final step against the run's teacher (first step), one seed, as its summary.json measured them."""
    rows = []
    for run in runs:
        summary = read_json(run / "summary.json")
        first, last = summary[0], summary[-1]
        ratio = last["fid"] / first["fid"] if last.get("fid") is not None and first.get("fid") else None
        rows.append({"label": run.name, "recipe": str(run / "recipe.yaml"), "group": Path(str(first.get("model", ""))).name,
                     "macs_x": first["macs"] / last["macs"] if last.get("macs") else None,
                     "bytes_x": first["weight_bytes"] / last["weight_bytes"] if last.get("weight_bytes") else None,
                     "fid_ratio": ratio, "fid_ratio_seeds": [ratio], "precision": last.get("precision"),
                     "recall": last.get("recall"), "psnr_db": last.get("psnr"),
                     "feature_space": first.get("extractor"), "n": first.get("n"), "seeds": [first.get("seed")]})
    return rows


FRONTIER_COLUMNS = [("group", "teacher", "{}"), ("label", "recipe / run", "{}"), ("macs_x", "MACs x", "{:.1f}"),
                    ("bytes_x", "bytes x", "{:.1f}"), ("fid_ratio", "FID / teacher", "{:.3f}"),
                    ("seeds_n", "seeds", "{}"), ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
                    ("psnr_db", "PSNR vs teacher (dB)", "{:.1f}"), ("feature_space", "feature space", "{}")]


def write_frontier_report(sources: list[str | Path], out: str | Path) -> Path:
    """An HTML page comparing several recipes: each source is a run folder of ``slimgen compress`` (its final
    step vs its teacher, one seed) or a frontier json (``bench/bench_frontier.py``: means over seeds); the
    Pareto plot of FID / teacher against MACs x and bytes x and the table of every row. Returns ``out``."""
    paths = [Path(s) for s in sources]
    rows = read_frontier([p for p in paths if p.suffix == ".json"]) + run_rows([p for p in paths if p.suffix != ".json"])
    for r in rows:
        r["seeds_n"] = len(r.get("fid_ratio_seeds") or [])
    import matplotlib.pyplot as plt

    fig = plot_frontier(rows)
    plot = _png(fig)
    plt.close(fig)
    table = "".join("<tr>" + "".join(f"<td>{_fmt(r, k, f)}</td>" for k, _, f in FRONTIER_COLUMNS) + "</tr>" for r in rows)
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in FRONTIER_COLUMNS)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>slimgen frontier</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>Compression frontier</h1>
<figure><img src="{plot}" alt="FID / teacher vs MACs x and bytes x"><figcaption>FID / teacher (each row's feature
space, below) against MACs x and stored bytes x fewer than the teacher (log); filled points are on the Pareto front,
hollow ones are dominated; colours: teachers.</figcaption></figure>
<table><thead><tr>{head}</tr></thead><tbody>{table}</tbody></table>
<p>Rows from a frontier json: FID ratios are means over the seeds it lists (n samples each, its feature space). Rows
from a run folder: the run's own evaluation (one seed; its reporting space).</p></body></html>
"""
    out = Path(out)
    write_text(out, page)
    return out

"""Write a compress run's summary as a markdown table with the headline ratios vs the teacher.

    .venv/bin/python bench/run_table.py runs/headline bench/results/headline.md

Ends with issue 6's headline targets checked against the run's last step; the throughput target
is read from bench/results/throughput.json when bench_throughput.py measured this same run.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import yaml

THROUGHPUT = Path(__file__).resolve().parent / "results" / "throughput.json"


def _check(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _targets(run: Path, rows: list[dict]) -> list[str]:
    t, last = rows[0], rows[-1]
    macs, size, fid = t["macs"] / last["macs"], t["weight_bytes"] / last["weight_bytes"], last["fid"] / t["fid"]
    out = [f"- at least 10x fewer MACs than the fp32 teacher: {_check(macs >= 10)} ({macs:.1f}x).",
           f"- at least 20x smaller stored weights: {_check(size >= 20)} ({size:.1f}x: {last['weight_bytes']:,} bytes).",
           f"- FID at most 1.2x the teacher's: {_check(fid <= 1.2)} ({fid:.3f}x for `{last['step']}`'s folder"
           + (f", {last['onnx_fid'] / t['fid']:.3f}x for its int8 ONNX model" if last.get("onnx_fid") is not None else "")
           + f"; n = {t['n']})."]
    measured = json.loads(THROUGHPUT.read_text()) if THROUGHPUT.is_file() else None
    if measured is None or Path(measured["run"]).resolve() != run.resolve():
        out.append("- exported model at least 4x the teacher's throughput at batch 64: not measured for this run "
                   "(run bench/bench_throughput.py on it).")
        return out
    for threads in ("2", "1"):
        ms = measured["ms_b64"][threads]
        speed = ms[measured["teacher"]] / ms[measured["exported"]]
        out.append(f"- exported model at least 4x the teacher's throughput at batch 64, {threads} thread(s): "
                   f"{_check(speed >= 4)} ({speed:.1f}x: int8 ONNX {ms[measured['exported']]:.2f} ms vs the PyTorch fp32 "
                   f"teacher's {ms[measured['teacher']]:.2f} ms; bench/results/throughput.md, one process, same latents).")
    return out


def main() -> None:
    run, dest = Path(sys.argv[1]), Path(sys.argv[2])
    rows = json.loads((run / "summary.json").read_text())
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    t = rows[0]
    lines = [
        f"# Compress run `{run.name}`", "",
        f"Command: `slimgen compress --recipe recipes/{run.name}.yaml --out {run}`; evaluation n={t['n']} (latent seed "
        f"{t['seed']}) vs {t['reference']} in `{t['extractor']}` features; {t['threads']} torch thread(s); "
        f"{platform.machine()}. Latency: median after warm-up, each row measured when its step finished (same process run; "
        "the machine was shared with other jobs). `onnx` columns time the exported model.onnx in ONNX Runtime.",
        "", "Recipe:", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```", "",
        "| step | params | MACs | MACs down | stored bytes | bytes down | torch ms b64 | onnx ms b64 | throughput b64 vs teacher "
        "| FID | FID / teacher | KID | PSNR vs teacher | step s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        fastest = min(x for x in (r.get("latency_ms_b64"), r.get("onnx_latency_ms_b64")) if x is not None)
        onnx = f"{r['onnx_latency_ms_b64']:.2f}" if r.get("onnx_latency_ms_b64") is not None else "–"
        psnr = f"{r['psnr']:.1f}" if r.get("psnr") is not None else "–"
        lines.append(
            f"| {r['step']} | {r['params']:,} | {r['macs']:,} | {t['macs'] / r['macs']:.1f}x | {r['weight_bytes']:,} | "
            f"{t['weight_bytes'] / r['weight_bytes']:.1f}x | {r['latency_ms_b64']:.2f} | {onnx} | "
            f"{t['latency_ms_b64'] / fastest:.1f}x | {r['fid']:.1f} | {r['fid'] / t['fid']:.2f} | {r['kid_mean']:.1f} | "
            f"{psnr} | {r.get('step_seconds') or 0:.0f} |")
    for r in rows:
        if r.get("onnx_fid") is not None:
            lines += ["", f"The exported `{r['step']}/model.onnx` itself, run in ONNX Runtime on the same {t['n']} latents: "
                      f"FID {r['onnx_fid']:.1f} ({r['onnx_fid'] / t['fid']:.2f}x the teacher's), KID {r['onnx_kid_mean']:.1f}, "
                      f"PSNR vs teacher {float(r['onnx_psnr']):.1f} dB (the table's FID of this row is its folder's PyTorch model)."]
    lines += ["", "Targets of issue 6 (headline recipe), as measured:", "", *_targets(run, rows)]
    dest.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""``slimgen compress``, ``slimgen report`` and ``slimgen demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from slimgen.cli.app import app

DEFAULT_RECIPE = "default"  # a shipped recipe (slimgen.pipeline.recipe.shipped_recipe), in the package
TABLE = [("step", "step", "{}"), ("params", "params", "{:,}"), ("macs", "MACs", "{:,}"),
         ("weight_bytes", "stored bytes", "{:,}"), ("latency_ms_b64", "ms@b64", "{:.1f}"),
         ("fid", "FID", "{:.3f}"), ("kid_mean", "KID", "{:.4f}"), ("precision", "prec", "{:.3f}"),
         ("recall", "recall", "{:.3f}"), ("psnr", "PSNR", "{:.1f}"), ("train_fid", "FID train space", "{:.3f}")]


def _title(rows: list[dict[str, Any]]) -> str:
    """Which spaces the FID columns are in, the reference and N (from the first row that says)."""
    first = next((r for r in rows if r.get("extractor")), {})
    space = (first.get("training_space") or {}).get("extractor")
    text = (f"slimgen summary: FID/KID/prec/recall in the reporting space {first.get('extractor', '?')} (no training or "
            f"selection saw it), n = {first.get('n', '?')} vs {first.get('reference', '?')}")
    if space:
        text += f"; 'FID train space': {space}, the space the perceptual term and best-epoch selection used"
    return text


def _cell(value: Any, fmt: str) -> str:
    """One table cell: "–" for a missing value, strings as they are (an infinite PSNR is stored as "inf")."""
    if value is None:
        return "–"
    return value if isinstance(value, str) else fmt.format(value)


def print_summary(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*[t for _, t, _ in TABLE], title=_title(rows))
    for r in rows:
        table.add_row(*[_cell(r.get(k), f) for k, _, f in TABLE])
    Console(width=max(Console().width, 150)).print(table)  # the whole table, also when piped


@app.command("compress")
def compress_cmd(
    recipe: Path = typer.Option(..., "--recipe", help="YAML recipe (see recipes/)"),
    out: Path = typer.Option(..., "--out", help="run folder; rerunning resumes after the last finished step"),
    teacher: str | None = typer.Option(None, help="model folder or zoo:NAME (overrides the recipe's teacher)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete an existing --out folder that is not a run of "
                                   "this recipe (or is one) and start over"),
) -> None:
    """Run a recipe: one model folder per step, summary.json and report.html."""
    from slimgen.pipeline import compress, load_recipe

    result = compress(load_recipe(recipe, teacher=teacher), out=out, overwrite=overwrite)
    print_summary(result.rows)
    typer.echo(f"report: {(result.out / 'report.html').resolve()}")


@app.command("report")
def report_cmd(run: Path = typer.Argument(..., help="a run folder written by slimgen compress")) -> None:
    """Rebuild RUN/report.html from RUN/summary.json and the step folders."""
    from slimgen.report import write_report

    typer.echo(f"report: {write_report(run).resolve()}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out"),
    recipe: str = typer.Option(DEFAULT_RECIPE, "--recipe", help="a recipe file, or the name of a shipped recipe "
                               "(default, headline, unstructured90, ...)"),
) -> None:
    """The main job: run the shipped default recipe on zoo:dcgan-fmnist and print the summary."""
    from slimgen.pipeline.recipe import shipped_recipe

    path = Path(recipe)
    compress_cmd(recipe=path if path.suffix in (".yaml", ".yml") or path.exists() else shipped_recipe(recipe), out=out,
                 teacher=None, overwrite=False)

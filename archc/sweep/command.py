"""The `archc sweep` click command (thin: options in, archc.sweep.run, the table and the best trial out). Imports
neither torch nor optuna."""
from __future__ import annotations

from pathlib import Path

import click

from archc import strict_json
from archc.clihelp import SEED


@click.command("sweep")
@click.argument("spec", type=click.Path(path_type=Path))  # a directory: load_file says so, exit 1
@click.option("--trials", type=click.IntRange(min=1), required=True,
              help="Finished trials the sweep ends with (complete, pruned or failed; with --resume, counted over "
                   "the whole sweep).")
@click.option("--parallel", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="Trials at once, each in its own process with the cores shared out (archc.threads).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Sweep folder (default: sweeps/<model name>): study.db, trial-NNNN/ run folders, results, plot, "
                   "best.json.")
@click.option("--resume", is_flag=True,
              help="Continue the sweep in --out: finished trials are kept, trials a kill interrupted are marked "
                   "interrupted and their values run again.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the sampler (Optuna's TPE).")
@click.option("-q", "--quiet", is_flag=True, help="No line per trial, no table: only the best trial.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (every trial, the best) as JSON.")
def sweep_command(spec: Path, trials: int, parallel: int, out: Path | None, resume: bool, device: str, seed: int,
                  quiet: bool, as_json: bool) -> None:
    """Search the spec's [sweep] table with Optuna: each trial trains a run folder with its values, pruned on the
    validation metric; a table, a plot of trials and the best trial's spec (best.json) at the end."""
    from archc.sweep import run
    from archc.sweep.results import table_text

    say = (lambda line: None) if quiet or as_json else (lambda line: click.echo(line, err=True))
    summary = run(spec, trials, parallel=parallel, out=out, resume=resume, device=device, seed=seed, say=say)
    if as_json:
        click.echo(strict_json.dumps(summary, indent=2))
        return
    if not quiet:
        click.echo(table_text(summary))
        files = summary["files"]
        click.echo(f"wrote {files['results_csv']}, {files['results_json']} and {files['plot']}")
    best = summary["best"]
    if best is None:
        click.echo(f"no trial completed; see {summary['files']['results_csv']}")
        return
    click.echo(f"best: trial {best['trial']} ({summary['metric']} {best['value']:.4f}): {best['run_dir']}; "
               f"its spec: {best['spec']}")

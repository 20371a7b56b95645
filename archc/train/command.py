"""The `archc train` click command (thin: options in, archc.train.run, a summary out). Imports no torch."""
from __future__ import annotations

import os
from pathlib import Path

import click

from archc.clihelp import EXPORTER, SEED, Number, SourceOption, Threads
from archc.strategies import STRATEGIES
from archc.train.tracking import chosen, options


@click.command("train")
@click.argument("spec", type=click.Path(path_type=Path))  # a directory: load_file says so, exit 1
@click.option("--data", default=None, cls=SourceOption, help="Data source SCHEME:ARGUMENT; overrides [data] source.")
@click.option("--target", default=None, metavar="COLUMN",
              help="The target column of a csv: source; overrides [data] target (default: the last column).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder (default: runs/<model name>).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Overrides [train] epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Overrides [train] batch_size (the global batch, whatever --nproc).")
@click.option("--lr", type=Number(low=0, open_low=True), default=None,
              help="Overrides [train] optimizer.lr.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=SEED, default=None, help="Overrides [train] seed.")
@click.option("--resume", is_flag=True,
              help="Continue the run in the run folder (from step 0 when it has no checkpoint yet).")
@click.option("--force", is_flag=True,
              help="Move a run already in --out aside to DIR.old-N (nothing is deleted) and start afresh.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes (DistributedDataParallel under torchrun; gloo on CPU, NCCL on GPUs).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
              help="How --nproc ranks hold the model; overrides [train] strategy: ddp (a full copy on each) or fsdp "
                   "(FSDP2: weights, gradients and optimizer state sharded per block; sharded checkpoints).")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Machines in the run: the same command on each, with its --node-rank (see README: Several machines).")
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="This machine's number, 0 to --nnodes - 1; node 0 holds rank 0 and writes the run folder.")
@click.option("--rdzv-endpoint", default=None, metavar="HOST:PORT",
              help="Node 0's address and a free port there, where the nodes meet (needed with --nnodes 2 or more).")
@click.option("--init", type=click.Path(path_type=Path), default=None,
              help="Start from this safetensors checkpoint instead of the seed's weights (strict, as build --weights; "
                   "a file, a sharded checkpoint's model.safetensors.index.json, or its folder).")
@click.option("--map", "init_map", type=click.Path(path_type=Path), default=None,
              help="Weights mapping (TOML) from --init's names to the spec's (default: the spec's own).")
@click.option("--no-optimize", is_flag=True,
              help="Write the plain exported graph: no onnxslim simplification (by default it runs within its "
                   "size budget and is kept where it removes compute nodes, metadata archc.optimized).")
@EXPORTER
@click.option("--threads", type=Threads(), default=None,
              help="torch threads of each training process (1-1024); overrides [train] threads (default: the cores "
                   "this process may use, shared over --nproc ranks and loader workers, fewer on a busy machine).")
@options  # --no-tensorboard, --mlflow, --wandb (archc.train.tracking's registry)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or epoch table.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
# --nproc's workers read the run folder's spec.json; this carries where the launcher read relative data paths from
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None, hidden=True)
def train_command(spec: Path, data: str | None, target: str | None, out: Path | None, epochs: int | None, batch_size: int | None,
                  lr: float | None, device: str, seed: int | None, resume: bool, force: bool, nproc: int,
                  quiet: bool, as_json: bool, data_root: Path | None, init: Path | None,
                  init_map: Path | None, no_optimize: bool, exporter: str, threads: int | None, strategy: str | None,
                  nnodes: int, node_rank: int, rdzv_endpoint: str | None, **track: bool) -> None:
    """Train SPEC with its [train] recipe on its [data]; write checkpoints, metrics, curves and model.onnx."""
    from archc.train.api import run

    if init_map is not None and init is None:
        raise click.UsageError("--map names the mapping of a checkpoint: give the checkpoint with --init")
    result = run(spec, data=data, target=target, out=out, epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed,
                 resume=resume, nproc=nproc, quiet=quiet or as_json, data_root=data_root, force=force, init=init,
                 init_map=init_map, optimize=not no_optimize, threads=threads, track=chosen(track),
                 strategy=strategy, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint, exporter=exporter)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return  # a rank of a distributed run: rank 0's table already ends with the test line
    if result is None:  # node R > 0 of several: node 0 wrote the run folder
        if not quiet:
            click.echo(f"node {node_rank} of {nnodes}: its {nproc} rank{'s' * (nproc > 1)} finished; node 0 wrote the run "
                       f"folder {out if out is not None else '(runs/<model name>)'}")
        return
    if as_json:
        click.echo(result.to_json())
        return
    if not quiet:
        from archc.train.baselines import short

        test = (f"test {result.metric} {result.test[result.metric]:.4f}{short(result.baselines)}" if result.test
                else "no test split")
        click.echo(f"{test}; best epoch {result.best_epoch} of {result.epochs_run}; {result.seconds:.1f} s; "
                   f"wrote {result.run_dir}")

"""`archc.train.run`: one training run from Python (what `archc train` calls), in this process or under torchrun."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archc.errors import InputError, ModelError
from archc.threads import check as check_threads
from archc.train.recipe import Overrides, Setup, prepare
from archc.train.run_dir import LOCK_ENV, RunDir, RunResult

if TYPE_CHECKING:
    from archc.train.distributed import Nodes

CHECKPOINTS = {"best": "best", "last": "checkpoint"}  # `archc export --checkpoint` names -> run folder roles


def run(spec_path: str | Path | dict[str, Any], *, data: str | None = None, target: str | None = None,
        out: str | Path | None = None,
        epochs: int | None = None, batch_size: int | None = None, lr: float | None = None, device: str = "auto",
        seed: int | None = None, resume: bool = False, nproc: int = 1, quiet: bool = False,
        data_root: str | Path | None = None, force: bool = False, init: str | Path | None = None,
        init_map: str | Path | None = None, optimize: bool = True, threads: int | None = None,
        track: tuple[str, ...] | None = None, on_epoch: Any = None, strategy: str | None = None, nnodes: int = 1,
        node_rank: int = 0, rdzv_endpoint: str | None = None, exporter: str = "emit") -> RunResult | None:
    """Train the spec's model; flags override [train]/[data]. Writes the run folder `out` (default
    runs/<model name>; archc.train.run_dir lists its files). `nproc` > 1 runs that many processes under torchrun
    (DDP, or FSDP2 with `strategy` "fsdp", which overrides [train] strategy). A folder holding a run is refused unless `resume` continues it or `force` moves its files aside to
    DIR.old-N (nothing is deleted). `data_root` replaces the folder relative data paths are read from (the launcher's, for its workers).
    `init` starts from a safetensors checkpoint instead of the seed's weights, through the mapping `init_map`
    (archc.weights; None: the spec's own naming). `optimize`: the final export simplifies its graphs where that is
    faster (archc.export.optimize); False keeps the plain export (`--no-optimize`). `exporter`: what writes the
    check's and the final export's graph (archc.export.onnx.EXPORTERS: the emitter, or the torchscript fallback). `threads`: torch threads of each
    process (None: [train] threads, else archc.threads' rule for the cores, the load and the ranks). `track`: the
    trackers rank 0 logs to (archc.train.tracking's names; None: TensorBoard, and MLflow when MLFLOW_TRACKING_URI is
    set; () for none); each one's package is checked before anything is read.
    `nnodes`, `node_rank`, `rdzv_endpoint`: this machine's place in a run over several (archc.train.distributed.Nodes:
    the same call on each, node 0 at HOST:PORT holding rank 0 and the run folder; other nodes return None).
    `on_epoch(row,
    metric)`: called after each epoch is recorded (this process's runs only: `archc sweep` prunes through it; an
    exception it raises ends the run, the folder left as an unfinished run that --resume continues)."""
    from archc.train.distributed import Dist, Nodes

    from archc.weights import Init

    if nproc < 1:
        raise InputError(f"expected --nproc of at least 1, received {nproc}", where="--nproc")
    nodes = Nodes(nnodes, node_rank, rdzv_endpoint).check()
    if threads is not None:
        check_threads(threads, "--threads")
    from archc.train.tracking import check, chosen

    track = chosen() if track is None else tuple(track)
    check(track)  # a tracker asked for and not installed: one error before the data are read
    start_from = Init.open(init, init_map) if init is not None else None  # a bad file or mapping fails first
    setup = prepare(spec_path, Overrides(data=data, target=target, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                        strategy=strategy), out,
                    data_root)
    setup.init = start_from
    setup.optimize = optimize
    setup.exporter = exporter
    setup.threads = threads
    setup.track = track
    setup.on_epoch = on_epoch
    dist = Dist.from_env()
    # a --nproc launcher checked the folder before starting its workers; a node other than 0 has no run folder
    if not (dist.active and os.environ.get(LOCK_ENV)) and nodes.main and dist.node == 0:
        setup.run_dir.check(resume, force)  # read-only: a folder mistake is reported before the data are read
        check_inputs(setup, spec_path, init, init_map)
    if (nproc > 1 or nodes.count > 1) and not dist.active:
        if not nodes.main:
            return _launch_node(setup, device, resume, nproc, quiet, nodes)
        return _launch(setup, device, resume, nproc, quiet, force, nodes)
    if not (dist.active and os.environ.get(LOCK_ENV)):  # a --nproc launcher checked it for its ranks
        check_memory(setup, device, dist.world, dist.local_world or dist.world)
    from archc.train.loop import train

    result = train(setup, dist, device, resume, quiet, force)
    assert result is not None or not dist.main
    return result  # type: ignore[return-value]


def check_inputs(setup: Setup, spec_path: Any, init: Any, init_map: Any) -> None:
    """No file the run reads is one it writes, replaces or moves aside (the run's spec.json may be the spec: it
    is read before being rewritten as used); the folder's lock is the run's own (RunDir.lock)."""
    from archc.data.sources import paths_read
    from archc.outputs import within, check_writes

    run_dir = setup.run_dir
    data = setup.spec.data.source if setup.spec.data is not None else None
    spec = None if isinstance(spec_path, dict) or Path(spec_path).resolve() == run_dir.spec.resolve() else spec_path
    read = paths_read(data, setup.data_root)
    for folder in (p for p in read if p.is_dir()):  # the run's files would join its data (images: a class)
        if within(run_dir.root, folder):
            raise InputError(f"expected a run folder outside the data folder {str(folder)!r}, received "
                             f"{str(run_dir.root)!r}", where="--out", hint="a resumed run reads its data again "
                             "(and a split read per batch is read again for the report): its files would join them; "
                             "choose another --out")
    check_writes({"SPEC": spec, "--init": init, "--map": init_map, "--data": read},
                 {"--out": [run_dir.path(role) for role in RunDir.FILES if role != "spec"]}, locks=False,
                 run_files=False)


def check_memory(setup: Setup, device: str, ranks: int, here: int) -> None:
    """Refuse, before the data are read or a weight allocated, a run whose `ranks` (`here` of them on this machine)
    would run out of memory: on CUDA each rank against its GPU's memory (the smallest of the GPUs the ranks here
    take), on the CPU the ranks here together against this machine's (archc.graph.memory.check_training)."""
    from archc.graph.memory import check_training
    from archc.train.devices import pick_device

    gpu = None
    if pick_device(device).type == "cuda":
        import torch

        count = torch.cuda.device_count()
        gpu = min(torch.cuda.get_device_properties(i).total_memory for i in range(max(1, min(here, count))))
    check_training(setup.graph, setup.spec.train, ranks, here, gpu, setup.file)


CPU_RANKS_PER_CORE = 4  # gloo ranks on CPU: past a few per core they only contend (and each holds torch's memory)


def _check_ranks(setup: Setup, device: str, nproc: int, nodes: "Nodes") -> None:
    """This machine can run `nproc` ranks and the global batch can be shared by all of them."""
    import torch

    from archc.train.devices import pick_device

    if pick_device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise InputError(f"expected at most {torch.cuda.device_count()} processes (one per GPU), received "
                         f"{nproc}", where="--nproc")
    elif nproc > (cap := CPU_RANKS_PER_CORE * (os.cpu_count() or 1)):
        raise InputError(f"expected at most {cap} processes on this machine's {os.cpu_count() or 1} cores "
                         f"({CPU_RANKS_PER_CORE} per core), received {nproc}", where="--nproc")
    if (ranks := nproc * nodes.count) > (batch := setup.spec.train.batch_size):
        shown = f"{nproc} x {nodes.count} nodes = {ranks}" if nodes.count > 1 else str(nproc)
        raise InputError(f"expected at most batch_size = {batch} processes (each takes a share of the global "
                         f"batch), received {shown}", where="--nproc")


def _launch_node(setup: Setup, device: str, resume: bool, nproc: int, quiet: bool, nodes: "Nodes") -> None:
    """Node R > 0 of a run over several machines: its `nproc` ranks join node 0's rendezvous and train; node 0's
    rank 0 alone writes the run folder (on node 0's disk). The workers read the spec as used from a temporary file
    (the same bytes node 0 writes as spec.json: the ranks compare the spec's hash as they start)."""
    import json
    import tempfile

    from archc.train.distributed import launch

    _check_ranks(setup, device, nproc, nodes)
    check_memory(setup, device, nproc * nodes.count, nproc)
    with tempfile.TemporaryDirectory(prefix="archc-node-") as folder:
        spec = Path(folder) / RunDir.FILES["spec"]  # the same spec node 0 writes into its run folder
        spec.write_text(json.dumps(setup.raw))
        # node 0's launcher ran the checks before training (its folder, the pre-training export): not again here
        launch(nproc, worker_args(setup, device, resume, quiet, spec), {LOCK_ENV: str(os.getpid())}, nodes)
    return None


def _launch(setup: Setup, device: str, resume: bool, nproc: int, quiet: bool, force: bool,
            nodes: "Nodes | None" = None) -> RunResult:
    """Check what can fail for the user here, prepare (and lock) the run folder, run `nproc` workers under
    torchrun on its spec.json (the spec as used: every override already applied) and read rank 0's result."""
    import torch

    from archc.train.export_check import check_export
    from archc.train.loop import data_metadata, load_for
    from archc.train.distributed import Nodes, launch
    from archc.tasks import objective_for

    nodes = nodes or Nodes()
    _check_ranks(setup, device, nproc, nodes)
    check_memory(setup, device, nproc * nodes.count, nproc)  # before the data are read
    run_dir = setup.run_dir
    run_dir.check(resume, force)
    objective = objective_for(setup.spec, setup.graph)
    data = load_for(setup, objective, torch.device("cpu"), resume)
    check_export(setup, data_metadata(objective, data, setup))
    claim = run_dir.prepare(setup.raw, resume, force)
    try:  # the workers see our pid in the lock and do not lock again
        launch(nproc, worker_args(setup, device, claim.resuming, quiet), {LOCK_ENV: str(os.getpid())}, nodes)
        return run_dir.read_result()
    finally:
        claim.release()


def worker_args(setup: Setup, device: str, resume: bool, quiet: bool, spec: Path | None = None) -> list[str]:
    """Every rank's `archc train` arguments: the run folder's spec.json (or `spec`, the same spec written elsewhere)
    and the flags that are not in the spec."""
    run_dir = setup.run_dir
    args = [str(spec or run_dir.spec), "--out", str(run_dir.root), "--device", device,
            "--data-root", str(setup.data_root if setup.data_root is not None else Path.cwd())]
    init = setup.init
    if init is not None:  # absolute: the workers' working folder need not be the launcher's
        args += ["--init", str(init.path.resolve())]
        args += ["--map", str(init.map_path.resolve())] if init.map_path is not None else []
    args += ["--threads", str(setup.threads)] if setup.threads is not None else []
    from archc.train.tracking import flags

    args += flags(setup.track)  # rank 0 opens them
    args += ["--exporter", setup.exporter]
    return args + ["--resume"] * resume + ["--quiet"] * quiet + ["--no-optimize"] * (not setup.optimize)


def export_run(run_dir: str | Path, checkpoint: str = "best", output: str | Path | None = None,
               exporter: str = "emit", optimize: bool | str = True, pixels: bool = False) -> Any:
    """Export one checkpoint of a run as the run's own final export does (same export, parity check and metadata):
    `checkpoint` is "best", "last" or a weights file of the run's model. Default output: RUN_DIR/model.onnx for
    best, else RUN_DIR/model-<last or the file's stem>.onnx. `optimize`: as the run's final export (--no-optimize:
    False). `pixels`: the file takes uint8 [batch, H, W, C] images (archc.export.pixels), by default
    RUN_DIR/model-pixels.onnx (best) or model-<last or stem>-pixels.onnx; model.onnx is left as it is. Returns the
    ExportReport."""
    from archc.export import export
    from archc.lower import lower
    from archc.metadata import Facts
    from archc.pipeline import compile_spec
    from archc.train.checkpoint import load_weights

    run = RunDir(Path(run_dir))
    if not run.spec.is_file():
        raise InputError(f"expected a run folder of `archc train` (holding {RunDir.FILES['spec']}), received "
                         f"{str(run.root)!r}", where="RUN_DIR")
    weights = run.path(CHECKPOINTS[checkpoint]) if checkpoint in CHECKPOINTS else Path(checkpoint)
    if not weights.is_file():
        raise InputError(f"expected a weights file, received {str(weights)!r}, which does not exist",
                         where="--checkpoint", hint="best and last exist once the run's first epoch or "
                                                   "checkpoint is written; or name a .safetensors file")
    which = None if checkpoint == "best" else "last" if checkpoint == "last" else weights.stem
    if pixels:
        which = "pixels" if which is None else f"{which}-pixels"
    out = Path(output) if output is not None else run.onnx_of(which)
    from archc.outputs import check_writes
    from archc.runtime.kvcache import model_files

    # a run writing the target's folder would write model.onnx itself: refused, as is replacing a file read here
    check_writes({"RUN_DIR": [run.spec, run.path("export"), run.result, run.state_json], "--checkpoint": weights},
                 {"--output" if output is not None else "RUN_DIR": model_files(out)})
    import torch

    compiled = compile_spec(run.spec)
    from archc.graph.memory import check_fits

    check_fits(compiled.graph, file=str(run.spec))  # type: ignore[arg-type]  # before the weights
    with torch.random.fork_rng(devices=[]):  # the weights are loaded: leave the caller's RNG as it was
        module = lower(compiled.graph, seed=0)
    meta = load_weights(weights, module)
    if checkpoint in CHECKPOINTS:
        _check_trained_spec(run, compiled.sha256, meta)
    facts = _data_metadata(run, compiled)
    facts.training = _summary(run, compiled.spec.data.source if compiled.spec.data else None,  # type: ignore[union-attr]
                              None if checkpoint == "best" else str(checkpoint))["training"]
    if isinstance(facts.source, str):  # recorded relative to the run folder: rebased to the ONNX's own
        from archc.data.sources import rebased

        facts.source = rebased(facts.source, run.root, out.parent)
    return export(compiled, out, module=module, exporter=exporter, extra_metadata=facts, optimize=optimize,
                  pixels=pixels, kv_cache=not pixels, carried=_carried(run, facts, out))


def _carried(run: RunDir, facts: Any, out: Path) -> list[tuple[Path, Path]]:
    """(the run's file, its copy beside `out`) for the file the metadata names (archc.tokenizer's tokenizer.json),
    checked before the export (archc.outputs.carried); a GenAI package file archc wrote at the last export to `out` is
    replaced."""
    from archc.export.genai import archcs_own
    from archc.outputs import carried

    tokenizer = facts["tokenizer"] if "tokenizer" in facts else None  # Facts, or export.json's record
    return carried(tokenizer, run.root, out, "the run's", lambda dst: archcs_own(dst, out))


def _check_trained_spec(run: RunDir, sha256: str, meta: dict[str, str]) -> None:
    """The run's own weights (best, last) were trained with the run's spec.json: the hash the weights file, or else
    the run's state, recorded is the spec's. A spec.json replaced since (another run's, an edited one whose shapes
    still fit) would export these weights into another model without a word."""
    recorded = meta.get("spec_sha256")
    if recorded is None and run.state_json.is_file():  # best.safetensors of an archc that did not record it
        recorded = run.read_json("train_state_json").get("spec_sha256")
    if recorded is not None and recorded != sha256:
        spec = RunDir.FILES["spec"]
        raise ModelError(f"expected the spec the run trained (hash {str(recorded)[:12]}…, as the run "
                         f"recorded it), received a {spec} whose hash is {sha256[:12]}…", file=str(run.spec),
                         hint=f"put back the run's own {spec}, or export a weights file with --checkpoint FILE")


def _summary(run: RunDir, source: str | None, checkpoint: str | None) -> dict[str, Any]:
    """archc.training as the run's final export writes it: from result.json, or for an unfinished run (one whose
    final export failed) from its latest state; plus which checkpoint, when not the best."""
    from archc.train.loop import training_summary

    if run.result.exists():
        r = run.read_result()
        best, epochs, test = r.best_epoch, r.epochs_run, r.test
    elif run.state_json.exists():
        state = run.read_json("train_state_json")
        best, epochs, test = state.get("best_epoch"), int(state.get("epoch", 0)), {}
    else:
        best, epochs, test = None, 0, {}
    summary = training_summary(best, epochs, test, source or "")
    if checkpoint is not None:
        summary["training"]["checkpoint"] = checkpoint
    return summary


def _checked_export(run: RunDir, compiled: Any) -> dict[str, Any]:
    """export.json, checked as the model's metadata will be read (the fitted columns, the target scale, the
    preprocessing of the spec's inputs): a corrupt file is an error naming it, not a model.onnx that fails later.
    `compiled`: the run's spec.json, compiled."""
    from archc.runtime.session import checked_preprocess
    from archc.train.dataset import recorded_scale, recorded_table

    metadata = run.read_json("export")
    recorded_table(run)
    recorded_scale(run)
    inputs, file = compiled.graph.inputs, str(run.path("export"))  # type: ignore[union-attr]
    _check_labels(metadata.get("labels"), compiled, file)
    for name, entry in checked_preprocess(metadata.get("preprocess"), list(inputs), "preprocess", file).items():
        channels = inputs[name].features[:1]  # axis 1, after the batch: what `archc infer` broadcasts a list over
        for key, v in entry.items():
            if isinstance(v, list) and len(v) > 1 and tuple(channels) != (len(v),):
                raise ModelError(f"{name}.{key}: expected one value per channel of {inputs[name].show()}, "
                                 f"received {len(v)}", where="preprocess", file=file)
    return metadata


def _check_labels(labels: Any, compiled: Any, file: str) -> None:
    """The class names become archc.task's labels, which `archc infer` prints and scores by: null, or distinct
    names, one per score of the task's output (a text "abc" would name three classes a, b, c)."""
    from archc.tasks import REGISTRY
    from archc.tasks.base import task_output

    if labels is None:
        return
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)) or \
            len(set(labels)) != len(labels):
        raise ModelError(f"expected null or a list of distinct class names, received {labels!r:.80}",
                         where="labels", file=file)
    spec, graph = compiled.spec, compiled.graph
    if REGISTRY[spec.task.kind].scores:
        last = graph.type_of(graph.outputs[task_output(graph, spec)]).shape[-1]
        if isinstance(last, int) and last != len(labels):
            raise ModelError(f"expected one class name per score of the output ({last}), received {len(labels)}",
                             where="labels", file=file)


def _data_metadata(run: RunDir, compiled: Any) -> Any:
    """The data's part of the metadata (preprocessing, tokenizer) the run recorded as it started; for a run of an
    archc before that record, read from its data again as training read them (same source and split seed).
    `compiled`: the run's spec.json, compiled (export_run's own)."""
    from archc.metadata import Facts

    if run.path("export").exists():
        return Facts.from_record(_checked_export(run, compiled))
    import torch

    from archc.tasks import objective_for
    from archc.train.dataset import load_data
    from archc.train.loop import data_metadata
    from archc.train.run_dir import say

    say(f"{str(run.root)!r} has no {RunDir.FILES['export']}: reading its data again for the preprocessing and "
        "tokenizer metadata")
    setup = prepare(run.spec, Overrides(), run.root)
    objective = objective_for(setup.spec, setup.graph)
    facts = data_metadata(objective, load_data(setup, objective, torch.device("cpu")), setup)
    facts.target_scale = None  # an archc from before export.json trained on the targets as loaded
    return facts

"""`archc.sweep.run`: the study (Optuna, SQLite storage in the sweep folder), its trials in this process or in
`parallel` worker processes, resumed after a kill, then the results, the plot and the best trial's spec."""
from __future__ import annotations

import json
import os
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Callable

from archc.errors import InputError, ModelError
from archc.language.sweep import apply, bounds, kind_of
from archc.sweep.folder import FILES, INTERRUPTED, Sweep, SweepDir, beside
from archc.sweep.trial import COMPLETE, PRUNED, Job, Outcome, run_job, worker_start
from archc.util import write_text_atomic

STUDY = "archc"        # the study's name in study.db


def run(spec: str | Path, trials: int, parallel: int = 1, out: str | Path | None = None, resume: bool = False,
        device: str = "auto", seed: int = 0, say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run the spec's [sweep] until the study holds `trials` finished trials (complete, pruned or failed; trials a
    kill interrupted are marked failed and their values run again), `parallel` at a time. Returns the summary
    (archc.sweep.results.summary): rows, best trial, files. `say` receives a line per finished trial."""
    sweep = prepare(spec, out, resume, device, parallel)
    folder = sweep.folder
    folder.root.mkdir(parents=True, exist_ok=True)
    from archc.train.run_dir import RunDir

    lock = RunDir(folder.root)
    lock.lock()  # prepare's check_writes refused a folder a live process holds: a dead one's lock is taken over
    try:
        study = open_study(sweep, resume, seed)
        for line in interrupted(sweep, study):
            say(line)
        record(sweep)
        loop(sweep, study, trials, parallel, say)
        from archc.sweep.results import conclude

        return conclude(sweep, study)
    finally:
        lock.unlock()


def prepare(spec: str | Path, out: str | Path | None, resume: bool, device: str, parallel: int) -> Sweep:
    """Compile the spec (its [sweep] values included), decide the folder and check it can be written."""
    from archc.outputs import check_writes
    from archc.pipeline import compile_spec
    from archc.tasks import REGISTRY
    from archc.threads import choose
    from archc.train.recipe import data_root

    compiled = compile_spec(spec)
    s = compiled.spec
    if not s.sweep:
        raise InputError("expected a [sweep] table naming what to search (e.g. \"params.width\" = "
                         "{ int = [32, 256] })", where="SPEC", hint="README: Sweeps")
    if s.data is None:
        raise InputError("expected a [data] source in the spec: every trial trains on it", where="SPEC")
    folder = SweepDir(Path(out) if out is not None else Path("sweeps") / s.model.name)
    check_writes({"SPEC": spec}, {"--out": [folder.path(role) for role in ("study", "sweep", "best")]})
    ours = [folder.path(role) for role in FILES if os.path.lexists(folder.path(role))]
    ours += sorted(folder.root.glob("trial-*"))
    if folder.path("study").is_file():
        if not resume:
            raise InputError(f"{str(folder.root)!r} holds a sweep", where="--out",
                             hint="pass --resume to continue it, or choose another --out")
    elif ours:  # a file where a sweep would write, and no study: a user's, or another command's
        raise InputError(f"{str(folder.root)!r} holds {', '.join(repr(p.name) for p in ours[:4])}, which a sweep "
                         f"writes, and no {FILES['study']}", where="--out", hint="choose another --out")
    if resume and folder.path("sweep").is_file():
        before = recorded_hash(folder)
        if before != compiled.sha256:
            raise InputError(f"expected the spec the sweep in {str(folder.root)!r} ran (hash {str(before)[:12]}…), "
                             f"received one whose hash is {compiled.sha256[:12]}…", where="--resume",
                             hint="resume with the sweep's own spec (its sweep.json), or choose another --out")
    from archc.train.devices import pick_device

    pick_device(device)  # --device cuda without a GPU: one error now, not one per trial
    task = REGISTRY[s.task.kind]
    root = data_root(s.data.source, Path(spec).parent)
    threads = choose(ranks=parallel).threads if parallel > 1 else None
    return Sweep(str(spec), compiled.raw, dict(s.sweep), folder, task.metric, task.higher_is_better,
                 compiled.sha256, str(root.resolve()) if root is not None else None, device, threads)


def recorded_hash(folder: SweepDir) -> Any:
    """The spec hash sweep.json recorded; ModelError naming the file when it is not a JSON object archc wrote."""
    path = folder.path("sweep")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelError(f"expected the sweep's record (a JSON object), received a file that cannot be read as one "
                         f"({type(e).__name__})", file=str(path)) from None
    return value.get("spec_sha256") if isinstance(value, dict) else None


def storage(sweep: Sweep) -> Any:
    """The study's storage, DIR/study.db (SQLite: writers wait up to a minute for another's lock, not 5 s)."""
    import optuna

    return optuna.storages.RDBStorage(sweep.folder.storage, engine_kwargs={"connect_args": {"timeout": 60}})


def open_study(sweep: Sweep, resume: bool, seed: int) -> Any:
    """The study in DIR/study.db: created, or loaded to continue (--resume). TPE samples (seeded with `seed` plus
    the trials already there, so a resumed sweep draws new values, not the first ones again); the median pruner
    stops a trial whose validation metric is below (above) the median of earlier trials' at the same epoch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep.store = storage(sweep)
    study = optuna.create_study(study_name=STUDY, storage=sweep.store, load_if_exists=resume,
                                direction="maximize" if sweep.maximize else "minimize",
                                pruner=optuna.pruners.MedianPruner())
    seeded = (seed + len(study.get_trials(deepcopy=False))) % 2**32  # numpy's generators take 32 bits
    study.sampler = optuna.samplers.TPESampler(seed=seeded)
    return study


def trial_id(store: Any, number: int) -> int:
    """The storage's id of trial `number` of the study (what a worker process finds its trial by)."""
    return store.get_trial_id_from_study_id_trial_number(store.get_study_id_from_name(STUDY), number)


def interrupted(sweep: Sweep, study: Any) -> list[str]:
    """Trials left running by a killed sweep: marked failed ('interrupted', their folders left as they are) and
    their values queued, so the next trials run them again."""
    from optuna.trial import TrialState

    lines, store = [], sweep.store
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tid = trial_id(store, t.number)
        store.set_trial_user_attr(tid, INTERRUPTED, True)
        store.set_trial_state_values(tid, TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
        lines.append(f"trial {t.number} was running when the sweep stopped: marked interrupted, its values queued "
                     "again")
    return lines


def record(sweep: Sweep) -> None:
    """sweep.json: the sweep's spec, hash, metric and direction (what --resume checks)."""
    write_text_atomic(sweep.folder.path("sweep"), json.dumps({
        "spec": sweep.raw, "spec_sha256": sweep.sha256, "metric": f"val_{sweep.metric}",
        "direction": "maximize" if sweep.maximize else "minimize"}, indent=2) + "\n")


def finished(study: Any) -> int:
    """Trials that count towards --trials: complete, pruned, or failed by their run (not interrupted)."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get(INTERRUPTED))


def suggest(trial: Any, target: str, r: Any) -> Any:
    """The trial's value for one target, drawn by Optuna from the range (the target's dotted name is the
    parameter's name in the study)."""
    kind, b = kind_of(r), bounds(r)
    if kind == "choice":
        return trial.suggest_categorical(target, b)
    if kind == "int":
        return trial.suggest_int(target, b[0], b[1], step=r.step or 1, log=r.log)
    return trial.suggest_float(target, float(b[0]), float(b[1]), step=r.step, log=r.log or kind == "log_uniform")


def job_for(sweep: Sweep, trial: Any) -> Job:
    """The trial's values drawn, its spec made (its data path relative to its own folder, as a run's spec.json is
    read by `archc train --resume`) and its run folder named."""
    values = {target: suggest(trial, target, r) for target, r in sweep.space.items()}
    folder = sweep.folder.trial(trial.number)
    return Job(trial.number, trial_id(sweep.store, trial.number), values, beside(apply(sweep.raw, values), sweep,
               folder), str(folder), sweep.folder.storage, STUDY, sweep.device, sweep.threads, str(folder.resolve()))


def tell(study: Any, trial: Any, outcome: Outcome) -> None:
    from optuna.trial import TrialState

    for key in ("epochs", "seconds", "test", "error"):
        trial.set_user_attr(key, getattr(outcome, key))
    if outcome.state == COMPLETE:
        study.tell(trial, outcome.value)
    else:
        study.tell(trial, state=TrialState.PRUNED if outcome.state == PRUNED else TrialState.FAIL)


def loop(sweep: Sweep, study: Any, trials: int, parallel: int, say: Callable[[str], None]) -> None:
    """Ask, run, tell until `trials` have finished: in this process, or `parallel` worker processes."""
    from archc.sweep.results import line, write_tables

    def told(trial: Any, outcome: Outcome) -> None:
        tell(study, trial, outcome)
        write_tables(sweep, study)
        say(line(outcome, sweep))

    if parallel <= 1:
        while finished(study) < trials:
            trial = study.ask()
            told(trial, run_job(job_for(sweep, trial), trial))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    running: dict[Future, Any] = {}
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn"),
                             initializer=worker_start) as pool:
        while running or finished(study) < trials:
            while len(running) < parallel and finished(study) + len(running) < trials:
                trial = study.ask()
                running[pool.submit(run_job, job_for(sweep, trial))] = trial
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                told(running.pop(future), future.result())


"""Where a command may write: the one check every writing command runs before it writes anything.

An output is refused when it is one of the command's inputs (the same file, however named), when it replaces a
file inside a folder the command reads, when it is a folder that holds an input (`--report DIR --force` would move
the input aside), and when it lands in a folder a live `archc train` holds (its `.archc.lock` names a process that
runs). The lock's format (one pid per line, the holder first) is read here, totally: any bytes are a lock, a lock
that holds no pid archc could have written is a foreign (stale) one.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Union

from archc.errors import InputError, ModelError

# A run folder's files by role (archc.train.run_dir.RunDir.FILES), in the order a fresh run deletes them: the state
# before the result, so a rank that looks meanwhile never sees "a state without a result" (an unfinished run) where
# there was a finished one. spec.json is not deleted but replaced atomically, so a --nproc worker reading it while
# rank 0 prepares the folder always finds it.
RUN_FILES = {"train_state": "train_state.safetensors", "train_state_json": "train_state.json",
             "checkpoint": "checkpoint.safetensors", "best": "best.safetensors", "metrics": "metrics.jsonl",
             "steps": "steps.jsonl", "curves": "curves.png", "onnx": "model.onnx", "export": "export.json",
             "result": "result.json", "tracking": "tracking.json", "spec": "spec.json", "report": "report.json",
             "report_png": "report.png",
             "tokenizer": "tokenizer.json"}  # a text: source's tokenizer.json, as the model's archc.tokenizer names it

LOCK = ".archc.lock"      # the run folder's lock file (archc.train.run_dir writes it)
MAX_PID = 2**31 - 1       # pid_t is a C int: a larger number cannot be a process id (os.kill overflows on it)
FRESH_SECONDS = 10        # an empty lock this young belongs to a run that is still writing its pid

Paths = Union[str, os.PathLike, None, Iterable[Union[str, os.PathLike, None]]]


# ---- the lock -------------------------------------------------------------------------------------------------

def read_lock(path: Path) -> tuple[list[int], str]:
    """The pids of a lock file (the holder first) and '' when it holds archc's format or nothing (missing,
    unreadable, empty); else [] and its content, quoted and shortened: a lock archc did not write."""
    try:
        data = path.read_bytes()[:4096]
    except OSError:
        return [], ""
    words = data.split()
    if all(w.isdigit() and 0 < int(w) <= MAX_PID for w in words):  # bytes.isdigit: ASCII digits only
        return [int(w) for w in words], ""
    text = data.decode("utf-8", "backslashreplace").strip()
    return [], repr(text if len(text) <= 40 else text[:39] + "…")


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending anything); False for a number
    that is no pid (0 and negatives name process groups, larger than pid_t overflow)."""
    if not 0 < pid <= MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # someone else's process: alive
    except (OSError, OverflowError):
        return False
    return True


def holder(folder: Path) -> str | None:
    """Who holds `folder`'s lock: 'pid N' (a live process), 'just starting' (an empty lock younger than
    FRESH_SECONDS: its writer has not written its pid yet), else None (no lock, a dead or a foreign one)."""
    path = folder / LOCK
    pids, foreign = read_lock(path)
    live = [pid for pid in pids if alive(pid)]
    if live:
        return f"pid {live[0]}"
    if pids or foreign:
        return None
    try:
        return "just starting" if time.time() - path.stat().st_mtime < FRESH_SECONDS else None
    except OSError:
        return None


# ---- the check ------------------------------------------------------------------------------------------------

def _paths(value: Paths) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value if v is not None]


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one of them does not exist (or a name the OS refuses): not the same file
        return False


def within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it (resolved: links and `..` followed)."""
    try:
        p, f = path.resolve(), folder.resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return p == f or f in p.parents


def carried(tokenizer: object, folder: Path, out: Path, owner: str,
            replaceable: Callable[[Path], bool] | None = None, source: Path | None = None) -> list[tuple[Path, Path]]:
    """(the file in `folder`, its copy beside `out`) for the file a model's `archc.tokenizer` metadata (`tokenizer`)
    names, which `archc infer` reads beside the model; none when `out` is in `folder`. Checked before anything is
    written: a missing file in `folder` is a ModelError (`owner`: whose, "the run's"), another file of that name
    beside `out` an InputError (never replaced, unless `replaceable` says archc wrote it and the export replaces it)."""
    name = tokenizer.get("file") if isinstance(tokenizer, dict) else None
    if not isinstance(name, str) or not name or Path(name).name != name:
        return []
    src, dst = source or folder / name, out.parent / name  # `source`: a file of another name (build --tokenizer)
    if not src.is_file():
        raise ModelError(f"expected {owner} {name}, which its archc.tokenizer names, received none", file=str(src),
                         hint="put back the tokenizer file the model was trained with")
    if os.path.abspath(dst) == os.path.abspath(src):
        return []
    if dst.exists() and (not dst.is_file() or dst.read_bytes() != src.read_bytes()) \
            and not (replaceable is not None and replaceable(dst)):
        raise InputError(f"expected no other {name} beside the exported model, received {str(dst)!r}, another "
                         "file", where="--output", hint="write to another folder, or move that file away")
    return [(src, dst)]


def check_writes(inputs: Mapping[str, Paths], files: Mapping[str, Paths] = {},
                 folders: Mapping[str, Paths] = {}, moving: bool = False, locks: bool = True,
                 run_files: bool = True) -> None:
    """Before anything is written: InputError when an output would replace or move what the command reads, or
    write where a live run writes. `inputs`: option -> the paths it reads (files or folders; missing ones are
    skipped); `files`: option -> the files it writes (side files included); `folders`: option -> folders it
    fills, which `moving` (--force) may move aside whole; `locks`: also refuse folders held by a live run;
    `run_files`: also refuse replacing a run folder's own files (False: the run writing its folder)."""
    reads = [(flag, p) for flag, v in inputs.items() for p in _paths(v) if p.exists()]
    moved = [(f, p) for f, v in folders.items() for p in _paths(v) if moving and p.is_dir() and any(p.iterdir())]
    for flag, out in ((f, p) for f, v in files.items() for p in _paths(v)):
        for what, src in reads:
            if _same(out, src):
                raise InputError(f"expected a file that is none of the command's inputs, received {str(out)!r}, "
                                 f"which is {_name(what, src)}", where=flag,
                                 hint="writing it would replace what the command reads: name another file")
            if src.is_dir() and out.exists() and within(out, src):
                raise InputError(f"expected a file outside the folders the command reads, received {str(out)!r}, "
                                 f"a file in {_name(what, src)}", where=flag,
                                 hint="it may be one of the inputs: name a file elsewhere")
        if run_files:
            _refuse_run_file(out, flag)
        for other, folder in moved:
            if within(out, folder):
                raise InputError(f"expected a file outside {other} {str(folder)!r}, which --force moves aside, "
                                 f"received {str(out)!r}", where=flag, hint="name a file elsewhere")
        if locks:
            parent = out.parent
            _refuse_held(parent, flag, f"{str(out)!r}: its folder {str(parent)!r}")
    for flag, folder in ((f, p) for f, v in folders.items() for p in _paths(v)):
        for what, src in reads:
            if within(src, folder):
                raise InputError(f"expected a folder that holds none of the command's inputs, received "
                                 f"{str(folder)!r}, which holds {_name(what, src)}", where=flag,
                                 hint="choose another folder")
        if locks:
            _refuse_held(folder, flag, repr(str(folder)))
            if (flag, folder) in moved:
                for sub, _, names in os.walk(folder):  # moving the folder moves every run folder inside it
                    if LOCK in names and Path(sub) != folder:
                        _refuse_held(Path(sub), flag, f"{str(folder)!r} holds {sub!r}, which")


def _refuse_run_file(out: Path, flag: str) -> None:
    """InputError when `out` is one of a run folder's own files (its state, weights, metrics, result, spec...):
    only its models (model*.onnx) and test report may be written there by another command."""
    root = out.parent
    if not ((root / RUN_FILES["spec"]).is_file() and any(os.path.exists(root / RUN_FILES[role])
                                                          for role in ("train_state", "result"))):
        return  # not a run folder
    kept = {RUN_FILES[role] for role in ("onnx", "report", "report_png")}
    if out.name in set(RUN_FILES.values()) - kept and os.path.lexists(out):
        raise InputError(f"expected a file that is none of a run's own files, received {str(out)!r}, the "
                         f"{out.name} of the run in {str(root)!r}", where=flag,
                         hint="writing it would replace the run's file: name another file")


def _name(flag: str, path: Path) -> str:
    return f"{flag} {str(path)!r}"


def _refuse_held(folder: Path, flag: str, lead: str) -> None:
    """InputError '<lead> is in use: an archc train (pid N) is writing it' when a live run holds `folder`."""
    who = holder(folder)
    if who is not None:
        raise InputError(f"{lead} is in use: an archc train ({who}) is writing it", where=flag,
                         hint=f"wait for it to end or choose another; if no run is writing there, remove "
                              f"{str(folder / LOCK)!r}")


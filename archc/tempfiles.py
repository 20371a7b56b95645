"""archc's temporary files: the `.NAME.PID_RANDOM.tmp` beside a file being written (or a folder of that name for a
file with a side file), made, tracked and removed here so that none is left behind.

- SIGTERM or SIGINT while one exists: the handler removes every live temporary, then the signal takes the course
  it had before (SIGTERM's default ends the process, status 143 in a shell; SIGINT raises KeyboardInterrupt).
  The handler is installed by the main thread only while a temporary exists, so a process that writes nothing
  keeps its signal dispositions untouched.
- SIGKILL, or a power cut, cannot be handled: a temporary's name carries its writer's pid, and the next write of
  the same file removes the temporaries of writers that no longer run. They are dot files, so `ls` hides them.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_live: dict[str, None] = {}      # the temporaries that exist (files or folders), in the order they were made
_previous: dict[int, Any] = {}   # signal -> the handler ours replaced, while ours is installed


def _name(path: Path) -> str:
    return f".{path.name}.{os.getpid()}_{secrets.token_hex(4)}.tmp"


def make(path: str | os.PathLike, folder: bool = False) -> str:
    """Create (and track) a new temporary file, or folder, beside `path`; returns its name. Leftovers of dead
    writers of `path` are removed first. OSError as os.open/os.mkdir raise it (the caller names `path`)."""
    p = Path(path)
    sweep(p)
    for _ in range(100):
        tmp = str(p.parent / _name(p))
        track(tmp)  # tracked before it exists: a signal right after the create still finds it
        try:
            if folder:
                os.mkdir(tmp, 0o700)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return tmp
        except FileExistsError:
            forget(tmp)
        except BaseException:
            forget(tmp)
            raise
    raise FileExistsError(f"no free temporary name beside {p}")


def remove(tmp: str) -> None:
    """Remove a temporary (gone already: nothing to do) and stop tracking it."""
    try:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.unlink(tmp)
    finally:
        forget(tmp)


@contextlib.contextmanager
def beside(path: str | os.PathLike, folder: bool = False) -> Iterator[str]:
    """A temporary file (or folder) beside `path` for the block, removed at its end unless renamed away."""
    tmp = make(path, folder)
    try:
        yield tmp
    finally:
        remove(tmp)


@contextlib.contextmanager
def tracked(path: str | os.PathLike) -> Iterator[None]:
    """Track a temporary made elsewhere (a TemporaryDirectory, a mkstemp in the system's folder) for the block:
    a signal removes it too."""
    track(str(path))
    try:
        yield
    finally:
        forget(str(path))


def track(tmp: str) -> None:
    """Remove `tmp` (a file or folder) on SIGTERM or SIGINT until it is forgotten."""
    _live[tmp] = None
    _install()


def forget(tmp: str) -> None:
    """Stop tracking `tmp` (renamed into place, or removed)."""
    _live.pop(tmp, None)
    if not _live:
        _restore()


# ---- SIGKILL's leftovers -------------------------------------------------------------------------------------

_PID = re.compile(r"\.(\d+)_[0-9a-f]{8}\.tmp")
_swept: set[tuple[str, str]] = set()  # (folder, name) swept by this process: a killed writer's leftovers go once


def sweep(path: Path) -> list[str]:
    """Remove the temporaries of `path` left by writers that no longer run (killed by SIGKILL); their names."""
    from archc.outputs import alive

    folder, prefix = path.parent, f".{path.name}"
    removed: list[str] = []
    if (str(folder), path.name) in _swept:
        return removed
    _swept.add((str(folder), path.name))
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        m = _PID.fullmatch(name[len(prefix):])
        if m is None or alive(int(m.group(1))):
            continue
        target = folder / name
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
            removed.append(str(target))
        except OSError:
            pass  # another sweeper, or no permission: not ours to insist on
    return removed


# ---- the signal handler --------------------------------------------------------------------------------------

def _install() -> None:
    """Put our handler on SIGTERM and SIGINT (main thread only; a signal someone ignores stays ignored)."""
    if _previous or threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        try:
            before = signal.getsignal(sig)
            if before is signal.SIG_IGN or before is None:  # ignored, or a handler set from C we could not put back
                continue
            signal.signal(sig, _on_signal)
            _previous[sig] = before
        except (ValueError, OSError):  # not the main interpreter, or a platform without this signal
            pass


def _restore() -> None:
    """Put back the handlers ours replaced (main thread only; otherwise ours stays, and passes signals on)."""
    if not _previous or threading.current_thread() is not threading.main_thread():
        return
    for sig, before in list(_previous.items()):
        try:
            if signal.getsignal(sig) is _on_signal:  # a handler set after ours is its setter's to undo
                signal.signal(sig, before)
        except (ValueError, OSError):
            pass
    _previous.clear()


def cleanup() -> None:
    """Remove every tracked temporary now."""
    for tmp in list(_live):
        try:
            remove(tmp)
        except OSError:
            pass


def _on_signal(signum: int, frame: Any) -> None:
    """Remove the temporaries, put the earlier handler back, and let the signal do what it did before."""
    before = _previous.get(signum, signal.SIG_DFL)
    cleanup()
    _restore()
    if callable(before):
        before(signum, frame)  # SIGINT's default_int_handler: KeyboardInterrupt
    elif before == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # the default action: the process ends by this signal

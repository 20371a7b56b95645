"""`python -m archc.train SPEC ...`: the train command on its own (what torchrun runs on every rank)."""
from __future__ import annotations

import os
import sys

import click

from archc.errors import ArchcError
from archc.train.command import train_command


def main() -> None:
    """Run the command; a user error prints one line per problem and exits 1 (as the archc CLI does)."""
    rank = "TORCHELASTIC_RUN_ID" in os.environ
    if rank:  # a rank under torchrun: end with it, however it ends
        _die_with_torchrun()
    code = _run()
    if rank:
        _hard_exit(code)
    sys.exit(code)


def _run() -> int:
    try:
        train_command.main(standalone_mode=False)
    except ArchcError as e:
        for p in e.problems():
            click.echo(f"error: {p.line()}", err=True)
        return 1
    except click.exceptions.Abort:
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return 0


def _hard_exit(code: int) -> None:
    """End a rank without the interpreter's shutdown. By then the run is over: the process group destroyed, the
    loader workers stopped, every file written and closed. What is left is C++ teardown (c10d's store and gloo's
    threads destroyed in static destructors), which aborts the process now and then ("terminate called without an
    active exception", SIGABRT, no Python frame) and turns a finished run into a failed one: it did in CI after
    a full run, with the collection in Dist.close in place. os._exit skips that teardown; streams are flushed
    first, so nothing printed is lost."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _die_with_torchrun() -> None:
    """SIGTERM this rank when its torchrun agent dies. torchrun stops its ranks when it is told to, but when the
    launcher of --nproc is SIGKILLed, torchrun's own shutdown can fail on its broken stderr pipe and leave the ranks
    running, writing the run folder; the kernel's parent-death signal does not depend on torchrun's shutdown."""
    import signal

    from archc.train.distributed import die_with_parent

    parent = os.getppid()
    arm = die_with_parent(parent)
    if arm is None:
        return
    arm()  # from here on the kernel signals us when `parent` dies
    try:  # ...but it may have died before: then our parent is a reaper, not torchrun
        cmdline = open(f"/proc/{parent}/cmdline", "rb").read()
    except OSError:
        cmdline = b""
    if b"torch.distributed.run" not in cmdline and b"torchrun" not in cmdline:
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()

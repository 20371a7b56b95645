"""`python -m archc.train SPEC ...`: the train command on its own (what torchrun runs on every rank)."""
from __future__ import annotations

import os
import sys

import click

from archc.errors import ArchcError
from archc.train.command import train_command


def main() -> None:
    """Run the command; a user error prints one line per problem and exits 1 (as the archc CLI does)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank under torchrun: end with it, however it ends
        _die_with_torchrun()
    try:
        train_command.main(standalone_mode=False)
    except ArchcError as e:
        for p in e.problems():
            click.echo(f"error: {p.line()}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)


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

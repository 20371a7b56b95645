"""`python -m archc.train SPEC ...`: the train command on its own (what torchrun runs on every rank)."""
from __future__ import annotations

import sys

import click

from archc.errors import ArchcError
from archc.train.command import train_command


def main() -> None:
    """Run the command; a user error prints one line per problem and exits 1 (as the archc CLI does)."""
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


if __name__ == "__main__":
    main()

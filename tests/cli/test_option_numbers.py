"""Every float option of every command is a finite number (archc.clihelp.Number): nan, inf and values below the
option's bound are refused with one line naming the option, exit 1, before the command runs."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.clihelp import Number


def _float_options() -> list[tuple[str, click.Option]]:
    out = []
    for name, cmd in sorted(main.commands.items()):
        for p in cmd.params:
            if isinstance(p, click.Option) and (isinstance(p.type, (Number, click.FloatRange))
                                                or p.type is click.FLOAT):
                out.append((name, p))
    return out


def test_the_walk_finds_the_float_options():
    found = {(name, p.opts[0]) for name, p in _float_options()}
    assert {("quantize", "--max-drop"), ("train", "--lr"), ("infer", "--temperature")} <= found


@pytest.mark.parametrize("command,option", _float_options(), ids=lambda v: getattr(v, "name", v))
def test_every_float_option_is_a_finite_number(command, option):
    assert isinstance(option.type, Number), f"{command} {option.opts[0]}: use archc.clihelp.Number"
    for value in ("nan", "inf", "-inf", "NaN", "Infinity", "1e999"):
        r = CliRunner().invoke(main, [command, option.opts[0], value, "nosuch.onnx"])
        assert (r.exit_code, r.stderr.splitlines()[:1]) == (
            1, [f"error: {option.opts[0]}: expected a finite number, received {value}"]), r.output
    if option.type.low is not None:
        below = str(option.type.low - 1)
        r = CliRunner().invoke(main, [command, option.opts[0], below, "nosuch.onnx"])
        assert r.exit_code == 1 and f"error: {option.opts[0]}: expected a number >" in r.stderr, r.output
    r = CliRunner().invoke(main, [command, option.opts[0], "many", "nosuch.onnx"])
    assert (r.exit_code, r.stderr.splitlines()[:1]) == (
        1, [f"error: {option.opts[0]}: expected a number, received 'many'"]), r.output


@pytest.mark.parametrize("command", ["build", "infer", "train"])
@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_seed_outside_the_generators_range_is_a_usage_error(command, seed):
    r = CliRunner().invoke(main, [command, "nosuch.toml", "--seed", seed])
    assert r.exit_code == 2 and "Invalid value for '--seed'" in r.stderr, r.output

"""Option values, fuzzed: every option of every command that takes a value is given values a user or a script can
type in a shell (nan, inf, huge and negative numbers, other scripts' digits, empty text, bytes that are not UTF-8, long
text), alone and two at a time. Whatever the value, the command ends with exit 0, 1 (a user error: lines that
start with `error:` and name the place) or 2 (click's usage error), never a traceback and never exit 3 (a bug in
archc).

Commands run on real arguments where that is cheap (validate on a spec, infer on an exported model and a file,
columns and init on a CSV, ops, schema); build, train, export and quantize, whose valid runs take seconds or minutes, run on
a missing path, so what is fuzzed there is option parsing and every check made before the path is read.

Every (option, value) pair is run once; then PER_COMMAND random pairs of them per command (ARCHC_FUZZ=long, `make
fuzz`: 25 times as many).
"""
from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from archc.cli import main

pytestmark = pytest.mark.fuzz

LONG = os.environ.get("ARCHC_FUZZ", "") == "long"
PER_COMMAND = 500 if LONG else 10
SPECS = Path(__file__).resolve().parents[2] / "specs"
NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e39", "-1", "0", "-0", "1e-320",
           str(2**31), str(2**63), str(2**64), "99999999999999999999", "-99999999999999999999", "0x10", "1_000",
           "\u00b2", "\u0663", "\uff12", "", " 3", "3 ", "1.5", "2e2"]
TEXTS = ["", " ", "\udcff", "a\udcffb", "x" * 5000, "../..", "/", "\u00b2", "nan", "-1", "a,b",
         "test", "val", "train", "all", "nosuch:thing", "csv:nosuch.csv?skip=99999999999999999999"]


def _values(option: click.Option) -> list[str]:
    kind = option.type
    if isinstance(kind, click.Choice):
        return [str(c) for c in kind.choices] + TEXTS[:4]
    if isinstance(kind, click.Path):
        return TEXTS
    name = getattr(kind, "name", "")
    if isinstance(kind, (click.IntRange, click.FloatRange)) or name in ("integer", "float") or "number" in name:
        return NUMBERS
    return TEXTS + NUMBERS[:6]


def _value_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.is_flag and p.name != "debug"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """What the cheap commands run on: a spec, an exported digit classifier, an input for it, a CSV."""
    root = tmp_path_factory.mktemp("options")
    model = root / "d.onnx"
    r = CliRunner().invoke(main, ["build", str(SPECS / "digits_mlp.toml"), "-o", str(model)])
    assert r.exit_code == 0, r.output
    np.save(root / "x.npy", np.random.default_rng(0).random((3, 64), dtype=np.float32))
    (root / "t.csv").write_text("a,b,label\n1.5,x,yes\n2.5,y,no\n3.5,x,yes\n")
    return {"spec": SPECS / "digits_mlp.toml", "model": model, "x": root / "x.npy", "csv": root / "t.csv",
            "out": root / "out"}


def _base(name: str, f: dict[str, Path]) -> list[str]:
    """A command, its positional arguments and the options a real run needs."""
    return [name] + {"validate": [str(f["spec"])], "infer": [str(f["model"]), "--input", str(f["x"])],
            "columns": [str(f["csv"])], "init": [str(f["csv"]), "-o", "-"], "ops": [], "schema": []}.get(name, [str(f["out"] / "nosuch")])


COMMANDS = sorted(name for name, cmd in main.commands.items() if _value_options(cmd))


def verdict(args: list[str]) -> None:
    r = CliRunner().invoke(main, args)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"archc {args}: raised {type(r.exception).__name__}: {r.exception}") from r.exception
    assert r.exit_code in (0, 1, 2), f"archc {args}: exit {r.exit_code}\n{r.output[-2000:]}"
    assert "Traceback" not in r.output and "internal error" not in r.output, f"archc {args}:\n{r.output[-2000:]}"
    if r.exit_code == 1:
        first = (r.stderr.splitlines() or [""])[0]
        assert first.startswith(("error: ", "Aborted")), f"archc {args}: exit 1 with {first!r}"


FUZZ = settings(max_examples=PER_COMMAND, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _arg(option: click.Option, value: str, tmp: Path) -> list[str]:
    if isinstance(option.type, click.Path) and option.name in ("output", "report_dir"):  # somewhere to write
        value = str(tmp / "w" / (value.replace("/", "_")[:50] or "o"))
    return [option.opts[-1] if option.opts[-1].startswith("--") else option.opts[0], value]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_value_is_an_answer_or_a_user_error(name, files, tmp_path):
    for option in _value_options(main.commands[name]):
        for value in _values(option):
            verdict(_base(name, files) + _arg(option, value, tmp_path))


@pytest.mark.parametrize("name", COMMANDS)
def test_any_option_values_is_an_answer_or_a_user_error(name, files, tmp_path):
    command = main.commands[name]
    options = _value_options(command)

    @FUZZ
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        args = _base(name, files)
        for option in data.draw(st.lists(st.sampled_from(options), min_size=min(2, len(options)), max_size=3, unique_by=id)):
            args += _arg(option, data.draw(st.sampled_from(_values(option))), tmp_path)
        verdict(args)

    one()

"""Source options are read without pydantic (archc/data/options.py) but exactly as pydantic's lax mode reads them:
every registered source's options, rebuilt as a pydantic model from the same declarations, take and refuse the
same probe values, with the same value or the same first error (type, message, context, input)."""
from __future__ import annotations

import pytest
from pydantic import ConfigDict, Field, ValidationError, create_model

from archc.data import REGISTRY
from archc.data.options import OptionError, build, fields

PROBES = ["3", " 3 ", "+3", "-1", "0", "3.0", "3.", "3.5", "1_000", "1__0", "٣", "", "x", "none", "true", "True",
          "yes", "off", "F", "N", "maybe", " true", ".", ",", ";", "COLUMN", 0, 1, 2, 4, 3.0, 3.5, 600, -0.0,
          float("nan"), float("inf"), True, False, None, b"1", ["3"]]
OPTIONS = sorted({cls.Options for cls in REGISTRY.values() if fields(cls.Options)}, key=lambda c: c.__name__)


def pydantic_twin(options: type) -> type:
    """`options` declared as a pydantic model, as they were before archc/data/options.py."""
    declared = {name: (f.annotation, Field(f.default, ge=f.ge, title=f.title, description=f.description))
                for name, f in fields(options).items()}
    return create_model(options.__name__, __config__=ConfigDict(extra="forbid", frozen=True), **declared)


def outcome(read, value):  # noqa: ANN001
    try:
        return "ok", read(value)
    except ValidationError as e:
        err = e.errors()[0]
        return "error", err["type"], err["msg"], err.get("ctx"), repr(err["input"])
    except OptionError as e:
        return "error", e.err["type"], e.err["msg"], e.err["ctx"], repr(e.err["input"])


@pytest.mark.parametrize("options", OPTIONS, ids=lambda c: c.__name__)
def test_options_read_as_pydantic_reads_them(options: type) -> None:
    twin = pydantic_twin(options)
    assert options() == options(**twin().model_dump())  # the same defaults
    for name in fields(options):
        for value in PROBES:
            ours = outcome(lambda v: getattr(build(options, {name: v}), name), value)
            theirs = outcome(lambda v: getattr(twin(**{name: v}), name), value)
            assert ours == theirs and type(ours[-1]) is type(theirs[-1]), (name, value, ours, theirs)


def test_the_first_bad_option_in_declaration_order_is_reported() -> None:
    options = REGISTRY["csv"].Options
    values = {"decimal": ";", "skip": "-1", "header": "maybe"}
    ours = outcome(lambda v: build(options, v), values)
    theirs = outcome(lambda v: pydantic_twin(options)(**v), values)
    assert ours == theirs and ours[1] == "bool_parsing"


def test_options_are_frozen() -> None:
    opts = build(REGISTRY["csv"].Options, {"skip": "2"})
    assert opts.skip == 2
    with pytest.raises(AttributeError):
        opts.skip = 3  # type: ignore[misc]

"""The data-source registry, walked: every registered source loads its own example through `load()`, is listed
by the CLI's help and `is_source`, reads relative paths from the spec's folder, and rejects unknown options and
tasks it cannot feed with one clear, located error. A new source is covered without editing this file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.data import REGISTRY, load
from archc.data.base import DATA_TASKS
from archc.data.sources import path_of
from archc.errors import DataError
from archc.runtime.evaluate import is_source
from archc.train.recipe import data_root

ROOT = Path(__file__).resolve().parents[2]
SCHEMES = sorted(REGISTRY)


def example(scheme: str, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    return REGISTRY[scheme].example(folder)


def with_option(source: str, option: str) -> str:
    return f"{source}{'&' if '?' in source else '?'}{option}"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_example_loads_and_splits(scheme: str, tmp_path: Path) -> None:
    ex = example(scheme, tmp_path)
    assert ex.source.startswith(f"{scheme}:") and ex.task in REGISTRY[scheme].tasks
    d = load(ex.source, val_fraction=0.2, test_fraction=0.2, seed=1, **ex.options)
    assert d.task == ex.task and d.example_shape == ex.shape and d.name == ex.source
    assert len(d.train) > 0 and len(d.train) + len(d.val) + len(d.test) == ex.size
    for part in (d.train, d.val, d.test):
        assert len(part.x) == len(part.y)
        if len(part) and d.task not in ("node_classification", "graph_classification"):
            assert tuple(part.x.shape[1:]) == ex.shape  # graph splits hold node or graph ids instead
    if d.classes is not None:
        assert all(0 <= int(v) < len(d.classes) for p in (d.train, d.val, d.test) for v in np.unique(p.y))
    if d.task in ("classification", "node_classification", "graph_classification"):  # names come with the ids
        assert d.classes and all(isinstance(c, str) for c in d.classes) and len(set(d.classes)) == len(d.classes)
    again = load(ex.source, task=ex.task, val_fraction=0.2, test_fraction=0.2, seed=1, **ex.options)
    for a, b in ((d.train, again.train), (d.val, again.val), (d.test, again.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_relative_paths_read_from_the_spec_folder(scheme: str, tmp_path: Path) -> None:
    ex = example(scheme, tmp_path / "spec_dir")
    path = path_of(ex.source)
    if not REGISTRY[scheme].takes_path or path is None:
        assert path is None and data_root(ex.source, tmp_path) is None
        return
    relative = ex.source.replace(str(tmp_path / "spec_dir") + "/", "", 1)
    assert path_of(relative, tmp_path / "spec_dir") == Path(path).relative_to(tmp_path / "spec_dir").as_posix()
    assert data_root(relative, tmp_path / "spec_dir") == tmp_path / "spec_dir"
    assert data_root(relative, tmp_path) is None
    d = load(relative, root=tmp_path / "spec_dir", **ex.options)
    assert len(d.train) + len(d.val) + len(d.test) == ex.size
    bare = Path(path)
    if REGISTRY[scheme].claims(bare):  # a path without its scheme: the hint names the scheme
        with pytest.raises(DataError, match="scheme:argument") as e:
            load(str(bare))
        assert f"'{scheme}:" in e.value.hint


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unknown_options_are_located_errors(scheme: str, tmp_path: Path) -> None:
    ex = example(scheme, tmp_path)
    cls = REGISTRY[scheme]
    source = with_option(ex.source, "bogus=1")
    with pytest.raises(DataError, match="unknown option 'bogus'") as e:
        load(source, **ex.options)
    assert e.value.where == source
    for name in cls.option_names():
        assert f"?{name}=" in e.value.message  # the message lists the options the source has
    if not cls.option_names():
        assert f"expected no options ({scheme}: sources take none)" in e.value.message
    with pytest.raises(DataError, match="unknown option 'bogus'"):
        load(ex.source, bogus=3, **ex.options)
    for name in cls.option_names():
        typo = name[:-1]
        with pytest.raises(DataError, match=f"unknown option '{typo}'") as e:
            load(with_option(ex.source, f"{typo}=1"), **ex.options)
        assert e.value.hint == f"did you mean {name!r}?"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tasks_a_source_cannot_feed(scheme: str, tmp_path: Path) -> None:
    ex = example(scheme, tmp_path)
    for task in [t for t in DATA_TASKS if t not in REGISTRY[scheme].tasks] + ["ranking"]:
        message = f"expected task .* \\(what {scheme}: sources feed\\), received '{task}'"
        with pytest.raises(DataError, match=message) as e:
            load(ex.source, task=task, **ex.options)
        assert e.value.where == ex.source
        assert all(repr(t) in e.value.message for t in REGISTRY[scheme].tasks)


@pytest.mark.parametrize("command", [["infer", "--help"], ["train", "--help"]])
def test_help_lists_every_source(command: list[str]) -> None:
    r = CliRunner().invoke(main, command)
    assert r.exit_code == 0, r.output
    text = "".join(r.output.split())  # click wraps long help lines anywhere
    for cls in REGISTRY.values():
        assert cls.usage().replace(" ", "") in text


def test_help_reads_the_registry_only_when_shown() -> None:
    """Importing the CLI loads no source module (they import numpy, which `archc validate` never needs)."""
    code = "import sys, archc.cli; assert 'archc.data' not in sys.modules and 'numpy' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_is_source_knows_every_scheme(tmp_path: Path) -> None:
    assert all(is_source(f"{scheme}:x") for scheme in REGISTRY)
    assert not is_source("nope:x") and not is_source("csv:")
    (tmp_path / "csv:x").write_text("a file named like a source is read as a file")
    assert not is_source(str(tmp_path / "csv:x"))


def test_readme_documents_every_source_and_option() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Data sources", 1)[1].split("\n## ", 1)[0]
    for scheme, cls in REGISTRY.items():
        assert f"`{scheme}:" in section, scheme
        for name in cls.option_names():
            assert f"{name}=" in section, (scheme, name)


def readme_data_section() -> str:
    return (ROOT / "README.md").read_text().split("## Data sources", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_readme_row_of_each_source_names_its_sets_tasks_and_options(scheme: str) -> None:
    """A new source, a new named set, task or option cannot go undocumented: its own table row names it."""
    cls = REGISTRY[scheme]
    rows = [line for line in readme_data_section().splitlines() if line.startswith(f"| `{scheme}:")]
    assert len(rows) == 1, f"README's Data sources table: expected one row for {scheme}:, received {len(rows)}"
    cells = rows[0].split(" | ")
    assert len(cells) == 4, rows[0]  # source (argument), tasks, what the loader does, options
    for name in cls.names:
        assert f"`{name}`" in cells[0] or f"`{scheme}:{name}`" in cells[0], (scheme, name)
    for task in cls.tasks:
        assert task in cells[1], (scheme, task)
    for option in cls.option_names():
        assert f"`{option}=" in cells[3], (scheme, option)
    if not cls.option_names():
        assert cells[3].strip(" |") == "—", (scheme, cells[3])


def test_readme_documents_every_data_key() -> None:
    """Every key of the spec's [data] table has a row in README's [data] table."""
    from archc.language.model import Data

    section = readme_data_section()
    for key in Data.model_fields:
        assert f"\n| `{key}` |" in section, key


def test_option_values_and_repeats_are_checked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"graphs: expected a number >= 4, received '2'") as e:
        load("graph:synthetic?graphs=2")
    assert "graph:synthetic generates" in e.value.hint
    with pytest.raises(DataError, match="context: expected a whole number, received true"):
        load("text:stdlib", context=True)
    with pytest.raises(DataError, match=r"max_bytes: expected one value, received \?max_bytes=5 in the source"):
        load("text:stdlib?max_bytes=5", max_bytes=6)
    with pytest.raises(DataError, match=r"expected options 'key=value' after '\?', received 'graphs'"):
        load("graph:synthetic?graphs")
    # Options the source declares and nobody set take `defaults`; others are ignored (context for a csv:).
    ex = example("csv", tmp_path)
    assert load(ex.source, defaults={"context": 7, "target": "label"}).classes == ["no", "yes"]
    assert load(ex.source, defaults={"target": "nope"}, target="label").classes == ["no", "yes"]


def test_the_registry_imports_its_sources_when_first_read() -> None:
    """Importing archc.data, its Lazy or one reader imports no other source (archc infer on a file reads one); the
    first read of the registry imports them all, listed in base.SOURCES's order whatever was imported first."""
    code = ("import sys, archc.data, archc.data.lazy, archc.data.npz; from archc.data.base import SOURCES; "
            "early = [m for m in SOURCES if m != 'npz' and f'archc.data.{m}' in sys.modules]; "
            "assert not early, early; from archc.data import REGISTRY; print(','.join(REGISTRY))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().split(",") == list(REGISTRY)
    assert list(REGISTRY).index("npz") > list(REGISTRY).index("csv")  # not first, though imported first

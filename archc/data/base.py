"""The data-source registry: one registered `Source` class per scheme (numpy-free, like archc/ops/base.py).

A source class declares its scheme, what its argument is (a path relative to the spec's folder, or a named
set), the data tasks it can feed, its typed options (`?key=value` after the argument, or keywords to
`archc.data.load`), a small example the registry test builds and loads, and its `load`, which receives only
what it declares: the argument and the split settings always, `task`, `options` and `columns` (the declared
columns of a spec's tabular input, archc/data/columns.py's Request) when its signature names them.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo
from archc.labels import LABEL_FORMS

if TYPE_CHECKING:
    from archc.data.dataset import Dataset

# What a Dataset can hold, by the `task=` load() is asked for: labelled classes, continuous targets, next-token
# windows, one graph's labelled nodes, labelled graphs.
DATA_TASKS = LABEL_FORMS  # archc/labels.py names them once


class SourceOptions(BaseModel):
    """Base of a source's typed options: fields with defaults and a description (none by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Splits:
    """How a source is cut into train/val/test: the held-out fractions and the seed of the cut."""

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class Example:
    """A small instance of a source for the registry test: the source string and keyword options given to
    load(), and what must come back: the data task, the per-example shape and the examples over all splits."""

    source: str
    task: str
    shape: tuple[int, ...]
    size: int
    options: dict[str, Any] = field(default_factory=dict)


class Source:
    """Base of every data source; an instance is one source as written (`name`, e.g. 'csv:iris.csv')."""

    scheme: ClassVar[str] = ""
    argument: ClassVar[str] = "NAME"              # how help texts name the argument: FILE, DIR, PATH, NAME
    takes_path: ClassVar[bool] = False            # a file or folder: relative to the spec's folder in train
    names: ClassVar[tuple[str, ...]] = ()         # named sets: the only arguments, or (path sources) non-paths
    tasks: ClassVar[tuple[str, ...]] = ()         # the data tasks it can feed
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    token_vocab: ClassVar[int | None] = None      # sources of token ids: how many distinct ids they draw (bytes: 256)

    def __init__(self, name: str) -> None:
        self.name = name  # where errors point, and the Dataset's name

    def load(self, arg: Any, splits: Splits) -> "Dataset":
        """The split Dataset (arg: a Path for path sources, else the name); may also take task=, options=."""
        raise NotImplementedError

    @classmethod
    def example(cls, folder: Path) -> Example:
        """A small source this class loads, written under `folder` (or a bundled set)."""
        raise NotImplementedError

    @classmethod
    def vocab(cls, options: SourceOptions, where: str) -> int | None:
        """How many distinct token ids the source draws with these options (None: not token ids); validate
        compares it with a language model's vocab. `token_vocab` unless an option changes it (a tokenizer)."""
        return cls.token_vocab

    @classmethod
    def claims(cls, path: Path) -> bool:
        """Whether a bare path (no scheme) looks like this source's input: for the hint of a missing scheme."""
        return False

    # ---- derived -----------------------------------------------------------------------------
    @classmethod
    def wants(cls) -> frozenset[str]:
        """The optional keywords its `load` declares (of task, options, columns: a tabular source's)."""
        return frozenset(inspect.signature(cls.load).parameters) & {"task", "options", "columns"}

    @classmethod
    def option_names(cls) -> list[str]:
        return list(cls.Options.model_fields)

    @classmethod
    def usage(cls) -> str:
        """'csv:FILE[?target=COLUMN]' for help texts."""
        args = "|".join([*cls.names, cls.argument] if cls.takes_path or not cls.names else cls.names)
        opts = "&".join(f"{k}={metavar(k, f)}" for k, f in cls.Options.model_fields.items())
        return f"{cls.scheme}:{args}" + (f"[?{opts}]" if opts else "")


def metavar(name: str, info: FieldInfo) -> str:
    """How help texts show an option's value: its field's title, N for whole numbers, else its name in capitals."""
    return info.title or ("N" if "int" in str(info.annotation) else name.upper())


REGISTRY: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    """Class decorator: add a source to the registry under its scheme."""
    assert cls.scheme and cls.scheme not in REGISTRY, f"data scheme {cls.scheme!r} registered twice"
    assert cls.tasks and set(cls.tasks) <= set(DATA_TASKS), f"{cls.scheme}: tasks {cls.tasks} not in {DATA_TASKS}"
    assert "options" in cls.wants() or not cls.Options.model_fields, f"{cls.scheme}: load() must take options="
    REGISTRY[cls.scheme] = cls
    return cls

"""`load('scheme:argument[?key=value&...]')`: find the scheme's registered Source, check the task, the split
fractions and the options centrally, resolve a path argument, and call the source's loader."""
from __future__ import annotations

import difflib
import glob
import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from pydantic import ValidationError

from archc.data.base import REGISTRY, Source, SourceOptions, Splits, metavar
from archc.data.dataset import Dataset, check_fractions
from archc.errors import DataError, describe

if TYPE_CHECKING:
    from archc.data.columns import Request


def load(source: str, *, task: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
         seed: int = 0, root: str | Path | None = None, defaults: Mapping[str, Any] | None = None,
         columns: Request | None = None, **options: Any) -> Dataset:
    """Load a registered source (`archc.data.REGISTRY`) into a split Dataset. Path arguments are relative to
    `root`. Options come after '?' in the source or as keywords (None: not given), and must be the source's;
    `defaults` fill options the source declares and nobody set (e.g. context from the model's input). `columns`:
    read the declared columns of a tabular input by name (sources whose load takes columns: csv:)."""
    cls, arg, opts = checked(source, task=task, tabular=columns.input if columns is not None else None, root=root,
                             defaults=defaults, **options)
    check_fractions(val_fraction, test_fraction, source)
    argument: Any = resolve(arg, root) if cls.takes_path and arg not in cls.names else arg
    opts = located_options(cls, opts, root)
    given = {"task": task, "options": opts, "columns": columns}
    return cls(source).load(argument, Splits(val_fraction, test_fraction, seed),
                            **{k: v for k, v in given.items() if k in cls.wants()})


def checked(source: str, *, task: str | None = None, tabular: str | None = None, root: str | Path | None = None,
            defaults: Mapping[str, Any] | None = None, **options: Any) -> tuple[type[Source], str, SourceOptions]:
    """The source's class, argument and typed options, with what `load` checks before reading anything: the scheme,
    a columns reader for a `tabular` input (its name), the task, the options and a named argument ('sklearn:iris').
    `archc validate` runs it on the spec's [data] source (nothing is read)."""
    cls, arg, query = parse(source, root)
    if tabular is not None and "columns" not in cls.wants():
        readers = [f"{s}:" for s, c in REGISTRY.items() if "columns" in c.wants()]
        raise DataError(f"expected a source that reads columns by name ({', '.join(readers)}) for the tabular input "
                        f"{tabular!r}, received a {cls.scheme}: source", where=source,
                        hint=f"a [inputs.{tabular}.columns] input reads a CSV or Parquet file: --data csv:FILE or "
                             f"parquet:FILE")
    if task is not None and task not in cls.tasks:
        raise DataError(f"expected task {' or '.join(map(repr, cls.tasks))} (what {cls.scheme}: sources feed), "
                        f"received {task!r}", where=source)
    opts = make_options(cls, source, query, {k: v for k, v in options.items() if v is not None}, defaults or {})
    if arg not in cls.names and not cls.takes_path and cls.names:
        close = difflib.get_close_matches(arg, cls.names, n=3)
        raise DataError(f"expected one of {', '.join(cls.names)}, received {arg!r}", where=source,
                        hint=f"did you mean {', '.join(close)}?" if close else "")
    return cls, arg, opts


def parse(source: str, root: str | Path | None = None) -> tuple[type[Source], str, dict[str, str]]:
    """(source class, argument, {option: text}) of 'scheme:argument[?key=value&...]'. A path argument that
    itself contains '?' and exists is taken whole."""
    known = ", ".join(f"{s}:" for s in REGISTRY)
    scheme, sep, arg = source.partition(":")
    if not sep or not arg:
        raise DataError(f"expected a data source 'scheme:argument' (one of {known}), received {source!r}",
                        where="data", hint=_guess_scheme(source))
    if scheme not in REGISTRY:
        close = difflib.get_close_matches(scheme, REGISTRY, n=3)
        raise DataError(f"unknown data scheme {scheme!r}: expected one of {known}", where=source,
                        hint=f"did you mean {', '.join(c + ':' for c in close)}?" if close else "")
    cls = REGISTRY[scheme]
    base, sep, text = arg.partition("?")
    if not sep or (cls.takes_path and base not in cls.names and resolve(arg, root).exists()):
        return cls, arg, {}
    query: dict[str, str] = {}
    for item in filter(None, text.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise DataError(f"expected options 'key=value' after '?', received {item!r}", where=source,
                            hint=_expected(cls))
        if key in query:
            raise DataError(f"{key}: expected one value, received ?{key}= twice", where=source)
        query[key] = value
    return cls, base, query


def make_options(cls: type[Source], where: str, query: dict[str, str], given: dict[str, Any],
                 defaults: Mapping[str, Any]) -> SourceOptions:
    """The source's typed options from the query and keywords (unknown names and bad values: DataError)."""
    fields = cls.Options.model_fields
    for key in [*query, *given]:
        if key not in fields:
            raise _unknown(cls, key, query.get(key, given.get(key)), where)
    for key in sorted(set(query) & set(given))[:1]:
        raise DataError(f"{key}: expected one value, received ?{key}={query[key]} in the source and "
                        f"{key}={given[key]!r}", where=where)
    for key, value in given.items():
        if isinstance(value, bool) and not _takes_bool(fields[key].annotation):
            raise DataError(f"{key}: expected {_want(fields[key].annotation)}, received {describe(value)}",
                            where=where)
    values = {k: v for k, v in defaults.items() if k in fields and v is not None}
    values.update(query)
    values.update(given)
    try:
        return cls.Options(**values)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0])
        raise DataError(f"{key}: expected {_want(fields[key].annotation, err)}, received "
                        f"{describe(err['input'])}", where=where, hint=fields[key].description or "") from None


def _takes_bool(annotation: Any) -> bool:
    """Whether an option's type admits True/False (`bool`, `bool | None`); a bool given for a number is an error
    (pydantic would read True as 1)."""
    return annotation is bool or bool in typing.get_args(annotation)


def _unknown(cls: type[Source], key: str, value: Any, where: str) -> DataError:
    """An option the source does not declare: name its own options, and who takes this one."""
    close = difflib.get_close_matches(key, cls.option_names(), n=1)
    owners = [f"{s}:" for s, c in REGISTRY.items() if key in c.Options.model_fields]
    hint = (f"did you mean {close[0]!r}?" if close else
            f"{key} is an option of {' and '.join(owners)} sources" if owners else "")
    expected = _expected(cls) or f"no options ({cls.scheme}: sources take none)"
    return DataError(f"expected {expected}, received {key}={describe(value)} (unknown option {key!r})",
                     where=where, hint=hint)


def _expected(cls: type[Source]) -> str:
    """'?max_bytes=N or ?context=N' (the source's options), '' when it has none."""
    return " or ".join(f"?{k}={metavar(k, f)}" for k, f in cls.Options.model_fields.items())


def _want(annotation: Any, err: dict | None = None) -> str:
    """What an option's value must be, in words."""
    ctx = (err or {}).get("ctx") or {}
    if "expected" in ctx:  # a Literal option: the values it takes ("'.' or ','")
        return str(ctx["expected"])
    for key, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            return f"a number {sign} {ctx[key]}"
    text = str(annotation)
    return "a whole number" if "int" in text else "a number" if "float" in text else "text" if "str" in text \
        else (err or {}).get("msg", "a valid value").lower()


def resolve(arg: str, root: str | Path | None) -> Path:
    """A path argument, relative to `root` when given (e.g. the spec's folder)."""
    p = Path(arg).expanduser()
    return p if p.is_absolute() or root is None else Path(root) / p


def file_options(cls: type[Source]) -> list[str]:
    """The options of a source that name a file (a text: source's tokenizer): read like a path argument."""
    return [k for k, f in cls.Options.model_fields.items() if isinstance(f.json_schema_extra, dict)
            and f.json_schema_extra.get("file")]


def locate(value: str, root: str | Path | None) -> Path:
    """A file option's path: relative to `root` (the spec's folder) when the file is there, else to the working
    folder (an option given with --data)."""
    p = resolve(value, root)
    return p if root is None or p.exists() else Path(value).expanduser()


def located_options(cls: type[Source], opts: SourceOptions, root: str | Path | None) -> SourceOptions:
    """`opts` with each file option read against `root` (`locate`)."""
    update = {k: str(locate(v, root)) for k in file_options(cls) if (v := getattr(opts, k)) is not None}
    return opts.model_copy(update=update) if update else opts


def path_of(source: str, root: str | Path | None = None) -> str | None:
    """The file or folder a path source reads, as written (options stripped); None for named sets, sources
    that take no path and malformed sources (load reports those)."""
    try:
        cls, arg, _ = parse(source, root)
    except DataError:
        return None
    return arg if cls.takes_path and arg not in cls.names else None


def rebased(source: str, root: str | Path | None, base: str | Path) -> str:
    """`source` with its path argument (read against `root`, else the working folder) written relative to the folder
    `base`: what a run records (relative to the run folder, never the user's absolute path) and what a reader turns
    back into a path it can open (base: the working folder). Sources without a path, as they are; a path on another
    drive stays absolute."""
    path = path_of(source, root)
    if path is None:
        return source
    scheme = source.partition(":")[0]
    cls, _, query = parse(source, root)
    moved = {k: _relative(locate(v, root), base) for k, v in query.items() if k in file_options(cls)}
    if moved:  # the file options too, the query rewritten in its order
        options = "&".join(f"{k}={moved.get(k, v)}" for k, v in query.items())
        return f"{scheme}:{_relative(resolve(path, root), base)}?{options}"
    return f"{scheme}:{_relative(resolve(path, root), base)}{source[len(scheme) + 1 + len(path):]}"


def _relative(path: Path, base: str | Path) -> str:
    """`path` relative to the folder `base` (posix), absolute when there is none (another drive)."""
    full = os.path.abspath(path)
    try:
        return Path(os.path.relpath(full, os.path.abspath(base))).as_posix()
    except ValueError:  # another drive (Windows): no relative path
        return full


def paths_read(text: str | None, root: str | Path | None = None) -> list[Path]:
    """What an --input or --data text reads: a data source's file or folder, a file, or a glob's matches."""
    if text is None:
        return []
    p = Path(text)
    scheme, sep, arg = text.partition(":")
    if sep and arg and scheme in REGISTRY and not p.exists():
        found = path_of(text, root)
        return [resolve(found, root)] if found is not None else []
    if not p.exists() and any(c in text for c in "*?["):
        return [Path(m) for m in glob.glob(text)]
    return [p]


def sources_help() -> str:
    """Every registered source's usage, for the CLI's help texts."""
    return ", ".join(cls.usage() for cls in REGISTRY.values())


def _guess_scheme(source: str) -> str:
    """A hint naming the scheme whose input a bare path looks like."""
    path = Path(source)
    guess = next((s for s, cls in REGISTRY.items() if cls.claims(path)), None)
    return f"did you mean '{guess}:{source}'?" if guess else ""

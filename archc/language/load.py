"""Read a spec file (TOML or JSON) into a plain dict; nothing in it is executed."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from archc.errors import SpecError, describe
from archc.strict_json import DuplicateKey, distinct_keys

MAX_BYTES = 16 * 1024 * 1024  # a spec is a small text file; refuse anything huge before parsing it


def load_text(text: str, fmt: str, name: str) -> dict[str, Any]:
    """Parse TOML or JSON text into a dict; parse errors say line and column."""
    try:
        data = tomllib.loads(text) if fmt == "toml" else json.loads(text, object_pairs_hook=distinct_keys)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"not valid TOML: {e}", file=name) from None
    except DuplicateKey as e:  # json keeps the last of two equal keys without a word: a layer attribute or a
        # declared column would be dropped (TOML refuses a repeated key itself)
        raise SpecError(f"expected distinct keys in each JSON object, received {e.key!r} twice",
                        hint="JSON would keep only the last; TOML refuses a repeated key too") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}", file=name) from None
    except ValueError:  # Python refuses to parse integers of over 4300 digits
        raise SpecError(f"not valid {fmt.upper()}: expected integers of reasonable size, received one of "
                        "thousands of digits", file=name) from None
    except RecursionError:
        raise SpecError("expected a spec of reasonable nesting depth, received one nested too deeply",
                        file=name) from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
        raise SpecError(f"expected a table (object) at the top level, received {kind.get(type(data), 'null')}",
                        file=name)
    return without_schema_key(data, name)


def without_schema_key(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The spec without its top-level "$schema" (an editor's pointer to archc.schema.json, as `#:schema` is in
    TOML): not part of the model, so kept out of the data and its hash; where the file sits must not make
    `--resume` refuse a run as another spec, and a run's spec.json must not carry a path relative to elsewhere."""
    if "$schema" not in data:
        return data
    if not isinstance(data["$schema"], str):
        raise SpecError(f"expected the schema's path or URL as a string, received {describe(data['$schema'])}",
                        file=name, where="$schema")
    return {k: v for k, v in data.items() if k != "$schema"}


def load_file(path: str | Path) -> dict[str, Any]:
    """Read `path` (.toml or .json) into a dict."""
    p = Path(path)
    name = str(path)
    if p.is_dir():  # before the suffix: a folder named `x.toml` or `runs` is not a misnamed file
        raise SpecError("expected a .toml or .json spec file, received a directory", file=name)
    fmt = {".toml": "toml", ".json": "json"}.get(p.suffix.lower())
    if fmt is None:
        raise SpecError(f"expected a .toml or .json spec file, received '{p.suffix or p.name}'", file=name)
    if not p.is_file():
        raise SpecError("no such file" if not p.exists() else "expected a file, received a directory", file=name)
    if p.stat().st_size > MAX_BYTES:
        raise SpecError(f"expected a spec under {MAX_BYTES // 2**20} MiB, received {p.stat().st_size:,} bytes",
                        file=name)
    try:
        text = p.read_text(encoding="utf-8-sig")  # editors on Windows write a BOM; tomllib refuses it
    except UnicodeDecodeError as e:
        raise SpecError(f"expected UTF-8 text, received undecodable bytes at offset {e.start}", file=name) from None
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror}", file=name) from None
    return load_text(text, fmt, name)

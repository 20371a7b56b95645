"""A weights mapping: how a checkpoint in another library's naming fills the model's tensors (data, never code).

A mapping file (TOML) lists rules; each takes one or more tensors of the file to one or more tensors of the model:

    archc_weights = 1                              # format version
    strip_prefix = ["transformer."]                # removed from file names that start with one (optional)
    drop = ["h.{i}.attn.bias"]                     # file tensors that are not weights (masks), skipped by name
                                                   # (after strip_prefix, or as written)
    keep = ["ln_f.weight", "h.{i}.ln_1.bias"]      # file tensors whose name is already the model's
    [[map]]
    from = "h.{i}.attn.c_attn.weight"              # file name; {i} stands for a decimal index
    to = ["blocks.{i}.attn.q_proj.weight", "blocks.{i}.attn.k_proj.weight", "blocks.{i}.attn.v_proj.weight"]
    transpose = true                               # 2-D tensors are transposed first (GPT-2's Conv1D)
    axis = 0                                       # one `from`, several `to`: split into equal parts on this axis;
                                                   # several `from`, one `to`: concatenated on it

Placeholders are `{name}` (letters, digits, _) matching a decimal integer; everything else matches itself. No
regular expression a user writes is ever compiled, so a mapping cannot run code or hang the matcher.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archc.errors import ArchcError, SpecError, raise_all

FORMAT_VERSION = 1
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
TOP_KEYS = ("archc_weights", "doc", "strip_prefix", "drop", "keep", "map")
RULE_KEYS = ("from", "to", "transpose", "axis")


@dataclass(frozen=True)
class Pattern:
    """A tensor name with `{name}` placeholders, each matching a decimal integer."""

    text: str
    names: tuple[str, ...]
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, text: str, where: str) -> "Pattern":
        names = tuple(_PLACEHOLDER.findall(text))
        literal = _PLACEHOLDER.split(text)[::2]  # the text between placeholders
        if any("{" in part or "}" in part for part in literal):
            raise SpecError(f"expected placeholders written {{name}} (letters, digits, _), received {text!r}",
                            where=where)
        if len(set(names)) != len(names):
            raise SpecError(f"expected each placeholder once per name, received {text!r}", where=where)
        if any(not part.strip("0123456789") for part in literal[1:-1]):  # "{i}{j}" reads "111" as 1, 11 or 11, 1
            raise SpecError(f"expected a character other than a digit between two placeholders, received {text!r}",
                            where=where, hint="an index is read as the longest run of digits")
        body = "".join(re.escape(part) + (f"(?P<{n}>0|[1-9][0-9]*)" if n else "")
                       for part, n in zip(literal, [*names, ""]))
        return cls(text, names, re.compile(body))

    def match(self, name: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(name)
        return m.groupdict() if m else None

    def fill(self, values: dict[str, str]) -> str:
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)


@dataclass(frozen=True)
class Rule:
    """File tensors `sources` -> model tensors `targets` (one to one, one split to many, or many concatenated)."""

    sources: tuple[Pattern, ...]
    targets: tuple[Pattern, ...]
    transpose: bool
    axis: int
    where: str                      # map[3], for messages

    @property
    def kind(self) -> str:
        return "split" if len(self.targets) > 1 else "concat" if len(self.sources) > 1 else "rename"


@dataclass(frozen=True)
class Mapping:
    """The rules of a mapping file (or the identity: the file is in the model's own naming)."""

    rules: tuple[Rule, ...]
    drop: tuple[Pattern, ...]
    strip_prefix: tuple[str, ...]
    file: str                       # the mapping file, "" for the identity

    @classmethod
    def identity(cls) -> "Mapping":
        return cls((), (), (), "")

    def file_name(self, name: str) -> str:
        """A file tensor's name with a declared prefix removed."""
        for prefix in self.strip_prefix:
            if name.startswith(prefix):
                return name[len(prefix):]
        return name

    def drops(self, name: str) -> bool:
        """Whether a `drop` name matches the file tensor `name`, after strip_prefix or as written (so that of two
        names strip_prefix makes one, `transformer.w` and `w`, either can be dropped)."""
        short = self.file_name(name)
        return any(d.match(short) is not None or d.match(name) is not None for d in self.drop)

    def reads(self, name: str) -> bool:
        """Whether the file tensor `name` goes to the model: not dropped, and (unless this is the identity) matched
        by a rule; the others are errors of the plan's, as extras."""
        short = self.file_name(name)
        return not self.drops(name) and (not self.file or any(src.match(short) is not None for rule in self.rules
                                                              for src in rule.sources))


def _names(value: Any, where: str) -> list[str]:
    """A name or a non-empty list of names."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise SpecError(f"expected a tensor name or a list of them, received {value!r}"[:200], where=where)
    return items


def _unknown(table: dict[str, Any], known: tuple[str, ...], where: str) -> list[ArchcError]:
    return [SpecError(f"unknown key '{k}' (expected one of {', '.join(known)})", where=f"{where}{k}")
            for k in table if k not in known]


def _rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise SpecError("expected a table with `from` and `to`", where=where)
    raise_all(_unknown(entry, RULE_KEYS, f"{where}."))
    sources = [Pattern.parse(t, f"{where}.from") for t in _names(entry.get("from"), f"{where}.from")]
    targets = [Pattern.parse(t, f"{where}.to") for t in _names(entry.get("to"), f"{where}.to")]
    transpose, axis = entry.get("transpose", False), entry.get("axis", 0)
    if not isinstance(transpose, bool):
        raise SpecError(f"expected true or false, received {transpose!r}", where=f"{where}.transpose")
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise SpecError(f"expected an integer axis, received {axis!r}", where=f"{where}.axis")
    if "axis" in entry and len(sources) == len(targets) == 1:
        raise SpecError("expected `axis` only where a rule splits (several `to`) or concatenates (several `from`)",
                        where=f"{where}.axis")
    if len(sources) > 1 and len(targets) > 1:
        raise SpecError(f"expected one `from` or one `to`, received {len(sources)} and {len(targets)}",
                        where=where, hint="split one file tensor into several, or concatenate several into one")
    for side, patterns in (("from", sources), ("to", targets)):
        seen: set[str] = set()
        for p in patterns:  # one file tensor in two places of a concatenation, or one target split into twice
            if p.text in seen:
                raise SpecError(f"expected each name once, received {p.text!r} twice", where=f"{where}.{side}")
            seen.add(p.text)
    names = set(sources[0].names)
    for p in sources[1:] + targets:  # every name binds the same indices: no two file tensors fill one
        if set(p.names) != names:
            raise SpecError(f"expected the placeholders of {sources[0].text!r} ({', '.join(sorted(names)) or 'none'})"
                            f", received {p.text!r}", where=where)
    return Rule(tuple(sources), tuple(targets), transpose, axis, where)


def parse(data: dict[str, Any], file: str) -> Mapping:
    """A mapping from its TOML data; errors name the file and the rule."""
    try:
        raise_all(_unknown(data, TOP_KEYS, ""))
        if data.get("archc_weights") != FORMAT_VERSION:
            raise SpecError(f"expected archc_weights = {FORMAT_VERSION} (the mapping format version), received "
                            f"{data.get('archc_weights')!r}", where="archc_weights")
        rules = data.get("map", [])
        if not isinstance(rules, list):
            raise SpecError("expected [[map]] tables", where="map")
        drop = [Pattern.parse(t, "drop") for t in (_names(data["drop"], "drop") if "drop" in data else [])]
        strip = _names(data["strip_prefix"], "strip_prefix") if "strip_prefix" in data else []
        keep = [Pattern.parse(t, "keep") for t in (_names(data["keep"], "keep") if "keep" in data else [])]
        same = [Rule((p,), (p,), False, 0, f"keep[{i}]") for i, p in enumerate(keep)]
        mapped = [_rule(r, f"map[{i}]") for i, r in enumerate(rules)]
        return Mapping(tuple(same + mapped), tuple(drop), tuple(strip), file)
    except ArchcError as e:
        raise e.located(file) from None


def load(path: str | Path) -> Mapping:
    """Read a mapping file (TOML)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"expected a TOML weights mapping, received text that does not parse ({e})",
                        file=str(path)) from None
    return parse(data, str(path))

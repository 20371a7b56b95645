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

    [numbering.n]                                  # the file's {n} counts blocks across stages (torchvision)
    first = 2
    stages = [2, 3, 4, 3, 3, 1]

Placeholders (archc.weights.pattern): `{i}` a decimal index, `{k:word}` a name, `{i+1}` an index expression (solved
in `from`, computed in `to`), `{n.stage}`/`{n.block}` of a numbered index; everything else matches itself. No
regular expression a user writes is ever compiled, so a mapping cannot run code or hang the matcher.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archc.errors import ArchcError, SpecError, raise_all
from archc.weights.pattern import Numbering, Pattern

FORMAT_VERSION = 1
TOP_KEYS = ("archc_weights", "doc", "strip_prefix", "drop", "keep", "numbering", "map")
NUMBERING_KEYS = ("first", "stages", "first_stage")
RULE_KEYS = ("from", "to", "transpose", "axis")


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

    def bind(self, source: int, name: str) -> dict[str, str] | None:
        """The placeholders' values with which `sources[source]` is the file name `name` and every target has a
        name (no index computed negative), or None: then the rule does not take that file tensor."""
        values = self.sources[source].match(name)
        if values is None or any(t.fill(values) is None for t in self.targets):
            return None
        return values


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
        return not self.drops(name) and (not self.file or any(rule.bind(s, short) is not None for rule in self.rules
                                                              for s in range(len(rule.sources))))


def _names(value: Any, where: str) -> list[str]:
    """A name or a non-empty list of names."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise SpecError(f"expected a tensor name or a list of them, received {value!r}"[:200], where=where)
    return items


def _unknown(table: dict[str, Any], known: tuple[str, ...], where: str) -> list[ArchcError]:
    return [SpecError(f"unknown key '{k}' (expected one of {', '.join(known)})", where=f"{where}{k}")
            for k in table if k not in known]


def _numbering(data: Any) -> dict[str, Numbering]:
    """[numbering.NAME] tables: how the file's {NAME} counts blocks across stages."""
    if not isinstance(data, dict):
        raise SpecError("expected [numbering.NAME] tables", where="numbering")
    out = {}
    for name, table in data.items():
        where = f"numbering.{name}"
        if not isinstance(table, dict):
            raise SpecError("expected a table with first and stages", where=where)
        raise_all(_unknown(table, NUMBERING_KEYS, f"{where}."))
        first, stages, first_stage = table.get("first"), table.get("stages"), table.get("first_stage", 0)
        for key, value in (("first", first), ("first_stage", first_stage)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"expected an integer >= 0, received {value!r}", where=f"{where}.{key}")
        if not (isinstance(stages, list) and stages and all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                            for n in stages)):
            raise SpecError(f"expected the blocks of each stage, a list of integers >= 1, received {stages!r}"[:200],
                            where=f"{where}.stages")
        out[name] = Numbering(first, tuple(stages), first_stage)
    return out


def _rule(entry: Any, where: str, numbering: dict[str, Numbering]) -> Rule:
    if not isinstance(entry, dict):
        raise SpecError("expected a table with `from` and `to`", where=where)
    raise_all(_unknown(entry, RULE_KEYS, f"{where}."))
    sources = [Pattern.parse(t, f"{where}.from", "from", numbering) for t in _names(entry.get("from"), f"{where}.from")]
    targets = [Pattern.parse(t, f"{where}.to", "to", numbering) for t in _names(entry.get("to"), f"{where}.to")]
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
    words = {slot.name for p in sources for slot in p.slots if slot.word}
    for side, patterns in (("from", sources), ("to", targets)):
        for p in patterns:
            for slot in p.slots:
                if slot.name in words and not slot.word and not slot.plain:
                    raise SpecError(f"expected no arithmetic on {{{slot.name}}}, a word, received {p.text!r}",
                                    where=f"{where}.{side}")
                if side == "from" and slot.name in words and not slot.word:  # {k:word} here, {k} an index there
                    raise SpecError(f"expected {{{slot.name}}} to be a word in every `from` or in none, received "
                                    f"{p.text!r}", where=f"{where}.{side}")
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
        numbering = _numbering(data.get("numbering", {}))
        drop = [Pattern.parse(t, f"drop[{i}]", "from", numbering)
                for i, t in enumerate(_names(data["drop"], "drop") if "drop" in data else [])]
        strip = _names(data["strip_prefix"], "strip_prefix") if "strip_prefix" in data else []
        keep = [Pattern.parse(t, f"keep[{i}]", "from", numbering)
                for i, t in enumerate(_names(data["keep"], "keep") if "keep" in data else [])]
        same = [Rule((p,), (p,), False, 0, f"keep[{i}]") for i, p in enumerate(keep)]
        mapped = [_rule(r, f"map[{i}]", numbering) for i, r in enumerate(rules)]
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

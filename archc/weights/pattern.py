"""A tensor name with placeholders, as a mapping file writes it: matched against a file's names, filled to a model's.

    {i}          a decimal index (0, 7, 12: no leading zero)
    {k:word}     a name: letters, digits and _ (one dotted part: `weight`, `running_mean`, `conv1`)
    {i+1} {2*i+1} {i-1}
                 an index computed from one placeholder: integer literals, + - * and parentheses, linear in it
    {n.stage} {n.block}
                 where [numbering.n] declares that {n} counts blocks across stages: n's stage and its block there

In a `from` (and in keep, drop) an expression is solved: `features.{2*s+1}` matches `features.5` with s = 2 and does
not match `features.4` (no whole s). In a `to` it is computed: `layer{s+1}`. A name whose computed index would be
negative, or a {n} outside its [numbering], does not match: the file tensor is left to the next rule. Expressions are
parsed here by hand (never eval) into a*x+b; the matcher is built from escaped literals and fixed character classes,
never from text the user wrote, and every name it matches has one reading.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from archc.errors import SpecError

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)|([-+*()]))")
WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
INT = "0|[1-9][0-9]*"
WORD = "[A-Za-z0-9_]+"
PARTS = ("stage", "block")  # what a numbered index gives a `to`


@dataclass(frozen=True)
class Numbering:
    """[numbering.NAME]: the file counts blocks across stages; `first` is the file's number of the first block
    counted, `stages` the blocks per stage, `first_stage` the model's number of the first stage."""

    first: int
    stages: tuple[int, ...]
    first_stage: int = 0

    def contains(self, n: int) -> bool:
        return self.first <= n < self.first + sum(self.stages)

    def part(self, n: int, which: str) -> int:
        """n's stage (numbered from first_stage) or its block within that stage (from 0)."""
        block = n - self.first
        for stage, size in enumerate(self.stages):
            if block < size:
                return self.first_stage + stage if which == "stage" else block
            block -= size
        raise AssertionError("contains() first")


@dataclass(frozen=True)
class Slot:
    """One placeholder: the name it binds, whether a word, and (an index) a*value+b of it or of its stage/block."""

    name: str
    word: bool = False
    a: int = 1
    b: int = 0
    part: str = ""          # "stage" or "block" of a [numbering] index; "" for the index itself

    @property
    def plain(self) -> bool:
        return self.word or (self.a, self.b, self.part) == (1, 0, "")


def _tokens(text: str, where: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SpecError(f"expected an index expression (integers, one placeholder, + - * and parentheses), "
                            f"received {{{text}}}", where=where)
        pos = m.end()
        yield ("int", m.group(1)) if m.group(1) else ("name", m.group(2)) if m.group(2) else ("op", m.group(3))


class _Parser:
    """expr := term (('+' | '-') term)*; term := factor ('*' factor)*; factor := INT | NAME | NAME.part
    | '-' factor | '(' expr ')'. Values are linear forms (a, b) = a*x + b of the one placeholder x."""

    def __init__(self, text: str, where: str) -> None:
        self.text, self.where = text, where
        self.tokens = list(_tokens(text, where)) + [("end", "")]
        self.i = 0
        self.names: set[str] = set()

    def fail(self, why: str) -> SpecError:
        return SpecError(f"expected an index expression ({why}), received {{{self.text}}}", where=self.where,
                         hint="e.g. {i+1}, {2*i}, {i-1}, {2*s+1}; placeholders of names are written {k:word}")

    def take(self, value: str) -> bool:
        if self.tokens[self.i] == ("op", value):
            self.i += 1
            return True
        return False

    def expr(self) -> tuple[int, int]:
        a, b = self.term()
        while True:
            if self.take("+"):
                c, d = self.term()
                a, b = a + c, b + d
            elif self.take("-"):
                c, d = self.term()
                a, b = a - c, b - d
            else:
                return a, b

    def term(self) -> tuple[int, int]:
        a, b = self.factor()
        while self.take("*"):
            c, d = self.factor()
            if a and c:
                raise self.fail("linear in its placeholder: no placeholder times a placeholder")
            a, b = a * d + c * b, b * d
        return a, b

    def factor(self) -> tuple[int, int]:
        kind, value = self.tokens[self.i]
        if self.take("-"):
            a, b = self.factor()
            return -a, -b
        if self.take("("):
            form = self.expr()
            if not self.take(")"):
                raise self.fail("a closing parenthesis")
            return form
        self.i += 1
        if kind == "int":
            if len(value) > 9:
                raise self.fail("integers of at most 9 digits")
            return 0, int(value)
        if kind == "name":
            self.names.add(value)
            return 1, 0
        raise self.fail("a number or a placeholder where " + (f"'{value}' is" if value else "the text ends"))

    def slot(self) -> Slot:
        a, b = self.expr()
        if self.tokens[self.i][0] != "end":
            raise self.fail(f"an operator where '{self.tokens[self.i][1]}' is")
        if len(self.names) != 1:
            raise self.fail("exactly one placeholder, " + (f"not {len(self.names)}: {', '.join(sorted(self.names))}"
                                                           if self.names else "none here"))
        if a == 0:
            raise self.fail("one that depends on its placeholder")
        (name,) = self.names
        base, _, part = name.partition(".")
        if part and part not in PARTS:
            raise self.fail(f"{base}.stage or {base}.block of a [numbering.{base}] index, not {name}")
        return Slot(base, False, a, b, part)


def _slot(inner: str, where: str) -> Slot:
    if _NAME.fullmatch(inner):
        return Slot(inner)
    name, colon, kind = inner.partition(":")
    if colon:
        if not _NAME.fullmatch(name.strip()) or kind.strip() != "word":
            raise SpecError(f"expected {{name}} (an index) or {{name:word}} (a name), received {{{inner}}}",
                            where=where)
        return Slot(name.strip(), word=True)
    return _Parser(inner, where).slot()


@dataclass(frozen=True)
class Pattern:
    """A tensor name with placeholders (the module docstring); `side` is "from" (matched) or "to" (filled)."""

    text: str
    slots: tuple[Slot, ...]
    literal: tuple[str, ...]        # the text around the slots: literal[0] slot[0] literal[1] ... literal[-1]
    regex: re.Pattern[str]
    numbering: tuple[tuple[str, Numbering], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.name for s in self.slots))

    @classmethod
    def parse(cls, text: str, where: str, side: str = "from",
              numbering: dict[str, Numbering] | None = None) -> "Pattern":
        numbering = numbering or {}
        literal = tuple(_PLACEHOLDER.split(text)[::2])  # the text between placeholders
        if any("{" in part or "}" in part for part in literal):
            raise SpecError(f"expected placeholders written {{name}}, {{name:word}} or {{index expression}}, "
                            f"received {text!r}", where=where)
        slots = tuple(_slot(inner, where) for inner in _PLACEHOLDER.findall(text))
        names = [s.name for s in slots]
        if side != "to" and len(set(names)) != len(names):  # a `to` may fill one value twice
            raise SpecError(f"expected each placeholder once per name, received {text!r}", where=where)
        if any(not part.strip("0123456789") for part in literal[1:-1]):  # "{i}{j}" reads "111" as 1, 11 or 11, 1
            raise SpecError(f"expected a character other than a digit between two placeholders, received {text!r}",
                            where=where, hint="an index is read as the longest run of digits")
        for slot, after in zip(slots, literal[1:]):
            if slot.word and after[:1] in WORD_CHARS:  # "{k:word}_x": where would the name end?
                raise SpecError(f"expected a {{{slot.name}:word}} placeholder followed by the name's end or a "
                                f"character other than a letter, digit or _, received {text!r}", where=where,
                                hint="a word is read up to the next '.' (or other such character)")
        for slot in slots:
            if slot.part and side != "to":
                raise SpecError(f"expected {{{slot.name}.{slot.part}}} only in a `to` (it is computed from the "
                                f"file's {{{slot.name}}}), received {text!r}", where=where)
            if slot.part and slot.name not in numbering:
                raise SpecError(f"expected a [numbering.{slot.name}] table for {{{slot.name}.{slot.part}}}, "
                                f"received {text!r} and no such table", where=where,
                                hint="[numbering.n] first = ..., stages = [...] says how {n} counts blocks")
            if slot.word and side == "to":
                raise SpecError(f"expected {{{slot.name}}} in a `to` (the `from` says it is a word), received "
                                f"{{{slot.name}:word}} in {text!r}", where=where)
        body = "".join(re.escape(part) + (f"({WORD if s.word else INT})" if s else "")
                       for part, s in zip(literal, [*slots, None]))
        used = tuple((n, numbering[n]) for n in dict.fromkeys(names) if n in numbering)
        return cls(text, slots, literal, re.compile(body), used)

    def match(self, name: str) -> dict[str, str] | None:
        """The placeholders' values for which this pattern is `name` (solving its index expressions), or None."""
        m = self.regex.fullmatch(name)
        if m is None:
            return None
        values: dict[str, str] = {}
        for slot, text in zip(self.slots, m.groups()):
            if slot.word:
                values[slot.name] = text
                continue
            x, rest = divmod(int(text) - slot.b, slot.a)
            if rest or x < 0:  # features.4 is no {2*s+1}
                return None
            values[slot.name] = str(x)
        counted = dict(self.numbering)
        if any(not counted[n].contains(int(values[n])) for n in counted if n in values):
            return None
        return values

    def fill(self, values: dict[str, str]) -> str | None:
        """The name at these values (computing index expressions); None where an index would be negative or a
        numbered index is outside its stages."""
        counted = dict(self.numbering)
        out = [self.literal[0]]
        for slot, after in zip(self.slots, self.literal[1:]):
            if slot.word or (slot.plain and slot.name not in counted):  # copied as it was matched
                out += [values[slot.name], after]
                continue
            x = int(values[slot.name])
            if slot.name in counted:
                if not counted[slot.name].contains(x):
                    return None
                if slot.part:
                    x = counted[slot.name].part(x, slot.part)
            v = slot.a * x + slot.b
            if v < 0:
                return None
            out += [str(v), after]
        return "".join(out)

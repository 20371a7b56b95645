"""archc's user-facing errors: each says where, what was expected, and what was received."""
from __future__ import annotations

import re


class ArchcError(Exception):
    """A user error (bad spec, shape, data, model or input): printed as one line per problem, exit 1."""

    kind = "error"

    def __init__(self, message: str, where: str = "", hint: str = "", file: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint
        self.file = file

    def located(self, file: str) -> "ArchcError":
        """Return self with `file` filled in when it is not set yet."""
        if not self.file:
            self.file = file
        return self

    def line(self) -> str:
        """One line: `file: where: message (hint)`; a newline quoted from the spec shows as \\n."""
        parts = [p for p in (self.file, self.where) if p]
        text = ": ".join(parts + [self.message])
        return one_line(f"{text} ({self.hint})" if self.hint else text)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "file": self.file, "where": self.where,
                "message": self.message, "hint": self.hint}

    def problems(self) -> list["ArchcError"]:
        return [self]

    def __str__(self) -> str:
        return self.line()


class SpecError(ArchcError):
    kind = "spec"


class ShapeError(ArchcError):
    kind = "shape"


class DataError(ArchcError):
    kind = "data"


class ExportError(ArchcError):
    kind = "export"


class InputError(ArchcError):
    kind = "input"


class ModelError(ArchcError):
    """A corrupt or foreign model file."""

    kind = "model"


class ErrorList(ArchcError):
    """Several problems found in one pass; each is reported on its own line."""

    def __init__(self, errors: list[ArchcError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(e.line() for e in self.errors))

    def located(self, file: str) -> "ErrorList":
        for e in self.errors:
            e.located(file)
        return self

    def problems(self) -> list[ArchcError]:
        return [p for e in self.errors for p in e.problems()]

    def line(self) -> str:
        return "\n".join(e.line() for e in self.problems())

    def __str__(self) -> str:
        return self.line()


def raise_all(errors: list[ArchcError]) -> None:
    """Raise nothing, the one error, or an ErrorList of several."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ErrorList(errors)


_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """Escape line breaks and other control characters (ids and keys come from the user)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def describe(value: object, limit: int = 60) -> str:
    """A short, readable rendering of a received value for messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int) and abs(value) >= 10**21:  # 10**30 reads better as 1.0e+30; 10**5000 has no repr
        text = f"{value:.1e}" if value.bit_length() < 1000 else f"an integer of {value.bit_length()} bits"
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, dict):
        text = "a table {" + ", ".join(map(str, list(value)[:5])) + ("…}" if len(value) > 5 else "}")
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

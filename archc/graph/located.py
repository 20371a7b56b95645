"""Per-node failures re-raised with the node's spec location, as torch.fx's ShapeProp does.

A user error (ArchcError) keeps its kind and gains the node's place; anything else raised while a pass handles
one node (an op's infer, param_shapes, flops or to_torch) is a bug in archc: it becomes an InternalError that
names the layer and the op, so the report says where, and the command still exits 3.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from archc.errors import ArchcError, one_line


class InternalError(RuntimeError):
    """A bug in archc met while a pass handled one node (or ran at all): says where and in which op."""

    def __init__(self, error: BaseException, where: str = "", op: str = "", pass_name: str = "") -> None:
        super().__init__(str(error))
        self.error = error          # the original exception (also the __cause__)
        self.where = where          # the node's spec location: layers[3] (fc2)
        self.op = op
        self.pass_name = pass_name
        self.file = ""

    def located(self, file: str, pass_name: str = "") -> "InternalError":
        """Fill in the file and the pass when they are not set yet."""
        self.file = self.file or file
        self.pass_name = self.pass_name or pass_name
        return self

    def __str__(self) -> str:
        place = ": ".join(p for p in (self.file, self.where) if p)
        what = f"op '{self.op}' raised " if self.op else ""
        during = f" (in pass {self.pass_name})" if self.pass_name else ""
        return one_line(f"{place + ': ' if place else ''}{what}{type(self.error).__name__}: {self.error}{during}")


@contextmanager
def at_node(where: str, op: str) -> Iterator[None]:
    """Run one node's work; ArchcErrors get the node's location if they have none, anything else is wrapped."""
    try:
        yield
    except ArchcError as e:
        if not e.where:
            e.where = where
        raise
    except InternalError:
        raise
    except Exception as e:  # an op's own code failed on valid input: a bug in archc, located
        raise InternalError(e, where, op) from e

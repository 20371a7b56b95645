"""A tabular input in the graph: the encoded row it takes, and the embedding front its layers read."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from archc.errors import ArchcError, SpecError
from archc.graph.ir import Node
from archc.ops.base import BATCH, TensorType
from archc.ops.tabular import ColumnEmbed

if TYPE_CHECKING:
    from archc.data.columns import Column

FRONT = "columns"  # the front node's id is '<input>.columns': dotted, so no spec id can take it


def row_type(columns: Sequence[Column]) -> TensorType:
    """The encoded row (archc.data.columns.Table.encode): float32 [batch, sum of encoded widths]."""
    return TensorType((BATCH, sum(c.encoded_width() for c in columns)), "float32")


def front(name: str, columns: Sequence[Column]) -> Node | None:
    """The node that turns `name`'s embedding columns' indices into features (None when no column embeds):
    its output, [batch, sum of Column.width()], is what the layers reading the input see."""
    op = ColumnEmbed.for_columns(list(columns))
    return Node(f"{name}.{FRONT}", op, [name], f"inputs.{name}.columns") if op is not None else None


def clashes(tables: Mapping[str, Sequence[Column]], inputs: Sequence[str], outputs: Sequence[str]) -> list[ArchcError]:
    """Column names the exported model that takes a row cannot hold: it has one ONNX input per column beside the
    model's other inputs, and its outputs are the spec's; so a column named like an output, like another input, or
    like a column of another tabular input is refused here, at inputs.NAME.columns.COL, not after training.
    (A column named like its own input or like a layer that is no output is fine: the core's values give way.)"""
    errors: list[ArchcError] = []
    owner: dict[str, str] = {}
    for name, columns in tables.items():
        for c in columns:
            where = f"inputs.{name}.columns.{c.name}"
            if c.name in outputs:
                errors.append(SpecError(
                    f"expected a column name other than the model's outputs ({', '.join(outputs)}), received "
                    f"{c.name!r}: the exported model takes one input per column, named as the column", where=where,
                    hint="rename the column, in the spec and the CSV header, or the output: its layer's id or [outputs]"))
            elif c.name in inputs and c.name != name:
                errors.append(SpecError(
                    f"expected a column name other than the model's other inputs, received {c.name!r}, the name "
                    f"of input {c.name!r}: the exported model takes one input per column beside them", where=where,
                    hint="rename the input, or the column in the spec and the CSV header"))
            elif c.name in owner:
                errors.append(SpecError(
                    f"expected a column name other than the columns of input {owner[c.name]!r}, received "
                    f"{c.name!r}, declared there too: the exported model takes one input per column", where=where,
                    hint="rename one of them, in the spec and the CSV header"))
            owner.setdefault(c.name, name)
    return errors

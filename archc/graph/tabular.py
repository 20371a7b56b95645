"""A tabular input in the graph: the encoded row it takes, and the embedding front its layers read."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

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

"""What the export's fronts share (a row's, archc/export/tabular.py; pixels', archc/export/pixels.py): the parity
tolerance every check of an exported graph uses, the pixel front's name prefix (the row front's is
archc.data.columns.ROW_PREFIX), and copying a model or renaming its values. A module of its own so that the two
fronts and archc.export.onnx import it without importing each other."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

ATOL, RTOL = 1e-4, 1e-4          # |onnx - torch| <= ATOL + RTOL * max|torch|
PIXELS_PREFIX = "archc_pixels"   # names of the pixel front's nodes and values


def copy_model(model: "onnx.ModelProto") -> "onnx.ModelProto":
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def rename_values(g: "onnx.GraphProto", mapping: dict[str, str]) -> None:
    """Apply a value renaming to a graph (and the subgraphs of its nodes, which may read outer values)."""
    from onnx import AttributeProto

    for n in g.node:
        n.input[:] = [mapping.get(v, v) for v in n.input]
        n.output[:] = [mapping.get(v, v) for v in n.output]
        for a in n.attribute:
            for sub in ([a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)):
                rename_values(sub, mapping)
    for group in (g.initializer, g.input, g.value_info):
        for v in group:
            v.name = mapping.get(v.name, v.name)

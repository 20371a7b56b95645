"""The tabular front op: a tabular input's embedding columns looked up, the other columns passed on."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from archc.ops.base import Example, NonNegInt, Op, PosInt, concrete, expect, expect_float, expect_rank, \
    register


@register
class ColumnEmbed(Op):
    """Embed a tabular row's category-index columns, pass the others on: [batch, encoded] -> [batch, features].

    The row is archc.data.columns' encoding: column k takes `widths[k]` values. A column with `rows[k] > 0` holds a
    category index in its first value (the reserved last row: an unknown category; any value that is no index in
    [0, rows) reads that row too), replaced by that row of its own table of `dims[k]` features; its other values
    (a missing indicator) and every other column pass through, in column order. archc inserts it after a tabular
    input with `encode = "embedding"` columns (`inputs.NAME.columns`)."""

    op: Literal["column_embed"] = "column_embed"
    widths: list[PosInt] = Field(min_length=1, description="values per column in the encoded row")
    rows: list[NonNegInt] = Field(description="embedding table rows per column (categories + 1 unknown row); "
                                              "0: the column passes through")
    dims: list[NonNegInt] = Field(description="features per embedded column (0 where rows is 0)")

    family = "embedding"
    examples = (Example({"widths": [1, 3, 2, 1], "rows": [0, 0, 5, 4], "dims": [0, 0, 3, 2]}, ((7,),)),
                Example({"widths": [1], "rows": [3], "dims": [4]}, ((1,),)))

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        expect_rank(x, (2,), "a tabular row [batch, values]")
        n = len(self.widths)
        expect(len(self.rows) == n and len(self.dims) == n, f"rows and dims with one entry per column ({n})",
               f"{len(self.rows)} rows, {len(self.dims)} dims")
        for k, (r, d) in enumerate(zip(self.rows, self.dims)):
            expect((r == 0) == (d == 0), f"column {k}: rows and dims both 0 (passed through) or both positive",
                   f"rows {r}, dims {d}")
        width = concrete(x.shape[1], "value axis")
        expect(width == sum(self.widths), f"a row of {sum(self.widths)} values (the widths' sum)", x.show())
        return x.with_shape((x.shape[0], sum(self.out_widths())))

    @classmethod
    def for_columns(cls, columns: list) -> "ColumnEmbed | None":
        """The front of a tabular input's declared columns (archc.data.columns.Column), None when none embeds."""
        if not any(c.embeds() for c in columns):
            return None
        return cls(widths=[c.encoded_width() for c in columns],
                   rows=[c.slots() + 1 if c.embeds() else 0 for c in columns],
                   dims=[int(c.dim or 0) if c.embeds() else 0 for c in columns])

    def out_widths(self) -> list[int]:
        """Features per column after the lookup: an embedded column's index becomes `dims[k]` features."""
        return [w - 1 + d if r else w for w, r, d in zip(self.widths, self.rows, self.dims)]

    def param_shapes(self, ins):
        tables = [(r, d) for r, d in zip(self.rows, self.dims) if r]
        return {f"tables.{j}.weight": shape for j, shape in enumerate(tables)}

    def flops(self, ins, out, sizes):
        return 0  # gathers and copies

    def to_torch(self, ins):
        from archc.nn.tabular import ColumnEmbed as M
        return M(self.widths, self.rows, self.dims)

    def _parts(self) -> list[tuple[int, int, int]]:
        """(start, stop, table or -1) per column, consecutive pass-through columns as one, as the torch module's."""
        parts: list[tuple[int, int, int]] = []
        at, j = 0, 0
        for w, r in zip(self.widths, self.rows):
            if r:
                parts.append((at, at + 1, j))
                j += 1
                if w > 1:
                    parts.append((at + 1, at + w, -1))
            elif parts and parts[-1][2] < 0 and parts[-1][1] == at:
                parts[-1] = (parts[-1][0], at + w, -1)
            else:
                parts.append((at, at + w, -1))
            at += w
        return parts

    def emit(self, e):
        x, out = e.ins[0], []
        tables = [r for r in self.rows if r]
        for start, stop, j in self._parts():
            cut = e.op("Slice", x, e.ints(start), e.ints(stop), e.ints(1))                  # (N, stop - start)
            if j < 0:
                out.append(cut)
                continue
            unknown = float(tables[j] - 1)
            v = e.op("Round", cut)                                                            # (N, 1)
            # an index outside [0, rows) (or NaN) reads the unknown row, as the torch module does
            ok = e.op("And", e.op("GreaterOrEqual", v, e.scalar(0.0)), e.op("LessOrEqual", v, e.scalar(unknown)))
            index = e.op("Cast", e.op("Where", ok, v, e.scalar(unknown)), to=7)
            rows = e.op("Gather", e.param(f"tables.{j}.weight"), e.op("Squeeze", index, e.ints(1)), axis=0)
            out.append(rows)                                                                   # (N, dim)
        return out[0] if len(out) == 1 else e.op("Concat", *out, axis=1)

"""ONNX export with metadata and ONNX Runtime parity (imports torch when used): a list of passes
(archc.export.passes) over one export context (archc.export.context)."""
from archc.export.onnx import ExportReport, metadata  # noqa: F401
from archc.export.passes import EXPORT_PASSES, export, report_lines  # noqa: F401

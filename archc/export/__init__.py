"""ONNX export with metadata and ONNX Runtime parity (imports torch when used)."""
from archc.export.onnx import ExportReport, export, metadata  # noqa: F401

"""Spec loading and the top-level data model."""
from archc.spec.load import load_file, load_text  # noqa: F401

"""Spec loading and the top-level data model."""
from archc.language.load import load_file, load_text  # noqa: F401

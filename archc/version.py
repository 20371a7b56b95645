"""archc's version (its own module, so submodules can read it without importing the package back)."""
__version__ = "0.1.0"

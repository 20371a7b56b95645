"""Lowering: graph -> torch.nn.Module (imports torch)."""
from archc.lower.fx import lower  # noqa: F401

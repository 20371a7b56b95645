"""The op registry. Adding an op: write its class in a family module, and import that module here."""
from archc.ops.base import REGISTRY, Example, Op, TensorType, register  # noqa: F401
from archc.ops import activation, conv, dense, norm, tensor  # noqa: F401  (each import registers ops)
from archc.ops import attention, embedding, recurrent, sequence  # noqa: F401
from archc.ops import gnn, unet  # noqa: F401
from archc.ops import learned, pad, pool, position, tabular  # noqa: F401


def activation_names() -> list[str]:
    """Ops usable as `act = "name"` sugar."""
    return sorted(name for name, cls in REGISTRY.items() if cls.is_activation)

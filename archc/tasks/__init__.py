"""The task registry. Adding a task kind: write its module (one registered Task class), and import it here."""
from archc.tasks.base import (REGISTRY, Example, Labelled, Task, default_kind, for_model,  # noqa: F401
                              losses, objective_for, register, task_class)
from archc.tasks import classification, regression, language_model, diffusion  # noqa: F401  (each registers)
from archc.tasks import node_classification, graph_classification  # noqa: F401
from archc.tasks import multilabel  # noqa: F401
from archc.tasks import embedding  # noqa: F401

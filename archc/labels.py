"""The label forms a dataset can hold, named once: data sources say which they produce and each task kind (archc.tasks)
says which it asks `archc.data.load(task=...)` for. The values read as the task kinds that ask for them by default
(multilabel asks for TARGETS: 0/1 rows of floats), so `load(task="classification")` and the messages keep their words.
Torch- and numpy-free: validate imports the task registry, which reads these.
"""
from __future__ import annotations

CLASSES = "classification"              # one class id per example, names in Dataset.classes
TARGETS = "regression"                  # float targets per example ([N] or [N, K])
TOKENS = "language_model"               # next-token windows of token ids
NODE_CLASSES = "node_classification"    # one graph; its labelled nodes are the examples
GRAPH_CLASSES = "graph_classification"  # whole labelled graphs are the examples
LABEL_FORMS = (CLASSES, TARGETS, TOKENS, NODE_CLASSES, GRAPH_CLASSES)

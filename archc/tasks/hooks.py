"""What the task kinds use from the packages above them, handed over by those packages: archc.tasks imports neither
archc.runtime nor archc.train, so the package graph stays a DAG (tests/test_import_cycles.py).

- `Model` hooks: the runtime sets each as the module defining it is imported (archc.runtime's __init__ imports
  them, and every Model a task method receives comes from archc.runtime).
- split builders: archc.train passes them to Task.splits as an argument (`SplitBuilders`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class ModelHooks:
    """Readers of an opened model (archc.runtime.session.Model) the tasks call at infer time."""

    lm_signature: Callable[[Any], Any] | None = None  # archc.runtime.generate.signature: context, tokenizer codec


MODEL = ModelHooks()


def lm_signature(model: Any) -> Any:
    """A token LM's signature (archc.runtime.generate.LMSignature): its context and tokenizer codec."""
    hook = MODEL.lm_signature
    assert hook is not None, "archc.runtime.generate sets tasks.hooks.MODEL.lm_signature as it is imported"
    return hook(model)


@dataclass(frozen=True)
class SplitBuilders:
    """How archc.train reads the splits (Task.splits): the split names, examples on the device or read per batch
    (archc.train.loader.examples_of), a graph dataset's nodes or graphs (archc.train.gnn)."""

    names: tuple[str, ...]
    examples: Callable[..., Any]
    nodes: Callable[..., Any]
    graphs: Callable[..., Any]

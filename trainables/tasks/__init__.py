"""The study's tasks by name. Each task is one small module; data is loaded only when a trial asks for it."""

from __future__ import annotations

from trainables.errors import unknown_name
from trainables.tasks import agentic, analysis, classification, code, extraction, math, qa, rag, synthesis
from trainables.tasks.base import Splits, Task

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        classification.TASK, math.TASK, qa.TASK, extraction.TASK, analysis.TASK,
        synthesis.TASK, agentic.TASK, rag.TASK, code.TASK,
    )
}  # fmt: skip


def get_task(name: str) -> Task:
    """The task called `name`, or an error listing the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise unknown_name("task", name, TASKS) from None


__all__ = ["TASKS", "Splits", "Task", "get_task"]

"""The one task registry; importing this package registers every built-in task."""

import difflib

from zoft.examples import Example
from zoft.tasks import demo, lmbff_tasks, opt_tasks, qa, superglue  # noqa: F401 - each registers its tasks
from zoft.tasks.base import TASKS, TaskSpec, PromptFormat, register_task

__all__ = ["TASKS", "Example", "TaskSpec", "PromptFormat", "get_task", "register_task"]


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, with the list of valid names in the error."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]

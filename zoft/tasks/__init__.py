"""Task registry; importing this package registers every built-in task."""

from zoft.tasks import demo, lmbff_tasks, opt_tasks, qa, superglue  # noqa: F401
from zoft.examples import Example
from zoft.tasks.base import TASKS, TaskSpec, Template, get_task, register_task

__all__ = ["TASKS", "Example", "TaskSpec", "Template", "get_task", "register_task"]

"""In-domain tasks: the built-in ones (`evals.tasks.registry.TASKS`) and YAML task specs
(evals/tasks/from_file.py), whose path goes wherever a task name goes."""
from __future__ import annotations

from typing import Any

from evals.tasks.base import Task
from evals.tasks.from_file import FileTask, is_task_file
from evals.tasks.registry import TASKS, list_tasks, task_class

__all__ = ["TASKS", "Task", "get_task", "list_tasks", "task_class"]


def get_task(name: str, **options: Any) -> Task:
    """An instance of a registered task, or of the task a YAML spec file declares (`name` is then its path);
    `options` are task-specific (e.g. ``judge="llm"`` for reading tasks)."""
    if is_task_file(name):
        return FileTask(name, **options)
    return task_class(name)(**options)

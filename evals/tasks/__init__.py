"""In-domain tasks: the built-in ones (`evals.tasks.registry.TASKS`) and YAML task specs
(evals/tasks/from_file.py), whose path goes wherever a task name goes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.data import DataError
from evals.tasks.base import Task
from evals.tasks.from_file import SPEC_SUFFIXES, FileTask, is_task_file
from evals.tasks.registry import TASKS, list_tasks, task_class

__all__ = ["TASKS", "Task", "check_task_name", "get_task", "list_tasks", "task_class"]


def check_task_name(name: str) -> None:
    """A DataError with what to do when `name` is neither a built-in task nor a path ending in .yaml/.yml."""
    if is_task_file(name) or name in TASKS:
        return
    known = ", ".join(sorted(TASKS))
    p = Path(str(name)).expanduser()
    if p.is_file():
        raise DataError(f"task {name}: a task file must be YAML with a name ending in {' or '.join(SPEC_SUFFIXES)}; "
                        f"rename it (built-in tasks: {known})")
    if p.is_dir():
        raise DataError(f"task {name}: is a folder; name a task file in it (python -m repro ls tasks --tasks-dir "
                        f"{name}) or a built-in task ({known})")
    raise DataError(f"unknown task {name!r}: not a built-in task ({known}) and not a task file (a path ending in "
                    f"{' or '.join(SPEC_SUFFIXES)})")


def get_task(name: str, **options: Any) -> Task:
    """An instance of a registered task, or of the task a YAML spec file declares (`name` is then its path);
    `options` are task-specific (e.g. ``judge="llm"`` for reading tasks)."""
    if is_task_file(name):
        return FileTask(name, **options)
    check_task_name(name)
    return task_class(name)(**options)

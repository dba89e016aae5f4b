"""Registry of in-domain tasks. Add a task: write ``evals/tasks/<name>.py`` with a `Task` subclass and add one line
here - or write a YAML task spec (evals/tasks/from_file.py) and pass its path wherever a task name goes. Imports are
lazy so listing tasks never loads torch or a sandbox."""
from __future__ import annotations

import importlib
from typing import Any

from evals.tasks.base import Task

#: task name -> "module:class"
TASKS: dict[str, str] = {
    "gsm8k": "evals.tasks.gsm8k:GSM8K",
    "mbpp": "evals.tasks.mbpp:MBPP",
    "squad": "evals.tasks.squad:SQuAD",
    "nq_open": "evals.tasks.nq_open:NQOpen",
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_task(name: str, **options: Any) -> Task:
    """An instance of a registered task, or of the task a YAML spec file declares (`name` is then its path);
    `options` are task-specific (e.g. ``judge="llm"`` for reading tasks)."""
    from evals.tasks.from_file import FileTask, is_task_file  # noqa: PLC0415

    if is_task_file(name):
        return FileTask(name, **options)
    return task_class(name)(**options)


def list_tasks() -> dict[str, str]:
    return {name: task_class(name).description for name in sorted(TASKS)}

"""The built-in tasks by name. Add a task: write ``evals/tasks/<name>.py`` with a `Task` subclass and add one line
to `TASKS`. Entries are "module:class" strings, imported on use, so listing tasks never loads torch or a sandbox."""
from __future__ import annotations

import importlib

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


def list_tasks() -> dict[str, str]:
    return {name: task_class(name).description for name in sorted(TASKS)}

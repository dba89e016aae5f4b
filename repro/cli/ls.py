"""`python -m repro ls`: the methods, tasks, presets, models and benchmarks there are."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from evals.benchmarks import BENCHMARKS
from evals.data import DataError
from evals.tasks import list_tasks
from evals.tasks.from_file import FileTask, find_task_files
from methods.registry import get_method, list_methods
from repro.cli import options
from repro.driver.recipes import available_presets, load_recipe
from repro.runtime.models import OFFLINE, TINY


def add_parser(sub) -> None:
    sp = sub.add_parser("ls", help="list methods, tasks, presets, models or benchmarks")
    sp.add_argument("what", choices=["methods", "tasks", "presets", "models", "benchmarks"])
    sp.add_argument("--tasks-dir", help="ls tasks: also list the YAML task files in this folder, each checked with "
                                        "every row of its data")
    options.add_data_dir(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "methods":
        rows = [(m, "yes" if get_method(m).trains else "no", d) for m, d in list_methods().items()]
        print(tabulate(rows, headers=["method", "trains", "description"]))
    elif args.what == "tasks":
        print(tabulate(list_tasks().items(), headers=["task", "description"]))
        if args.tasks_dir:
            return _file_tasks(args.tasks_dir, options.data_dir(args))
    elif args.what == "presets":
        rows = []
        for name in available_presets():
            r = load_recipe(name)
            rows.append((name, r.model, ",".join(r.tasks), ",".join(r.methods), ",".join(map(str, r.seeds)),
                         r.description))
        print(tabulate(rows, headers=["preset", "model", "tasks", "methods", "seeds", "description"]))
    elif args.what == "models":
        rows = [(TINY, "built in-process", "-", "tests and smoke runs")]
        rows += [(m.name, "PyPI GGUF: " + (m.packages[0] if len(m.packages) == 1 else f"{len(m.packages)} parts"),
                  m.hub_id, m.notes) for m in OFFLINE.values()]
        print(tabulate(rows, headers=["name", "source", "hub id", "notes"]))
        print("\nAny hub id (org/name) or local HF folder is accepted wherever a model is named.")
    elif args.what == "benchmarks":
        print(tabulate([(k, v.task, v.primary_metric, v.default_num_fewshot, ", ".join(v.data_files))
                        for k, v in BENCHMARKS.items()],
                       headers=["benchmark", "lm-eval task", "primary metric", "shots", "data files"]))
    return 0


def _file_tasks(folder: str, data_dir: Path | None) -> int:
    """The YAML task files in `folder`, each checked with its data (every row of both splits): an invalid one is
    listed with its error, and the exit code is then 2."""
    rows, bad = [], []
    for path in find_task_files(folder):
        try:
            t = FileTask(path)
            if data_dir is None and any("{data_dir}" in f for f in t.files.values()):
                data = "not read (its paths use {data_dir}: pass --data-dir)"
            else:
                n_train, n_test = (len(t.load_split(s, data_dir).examples) for s in ("train", "test"))
                data = f"{n_train} train / {n_test} test"
            rows.append((t.name, str(path), t.judge_kind, t.template_version, data, t.description))
        except DataError as e:
            bad.append(options.one_line(e))
            rows.append(("(invalid)", str(path), "-", "-", "-", options.one_line(e)))
    print(f"\nFile tasks in {folder} (use the path wherever a task name goes):")
    print(tabulate(rows, headers=["task", "file", "judge", "version", "data", "description"]) if rows
          else "(no *.yaml / *.yml task files)")
    if bad:
        print(f"error: {len(bad)} of {len(rows)} task files in {folder} are invalid; first: {bad[0]}", file=sys.stderr)
        return 2
    return 0

"""``repro compare``: does S3FT help on *your* task? Base vs SFT vs S3FT on one task, with the paper's headline
benchmarks on subsets, through the normal grid driver (resumable, with its progress line and ETA), then the suite's
tables: in-domain accuracy, target sources, generalization drops and the paired comparisons (CIs, p values).

It takes a base preset (default ``quick``), swaps its tasks for the given task (a YAML task file or a built-in name)
and its model for ``--model``, writes that recipe to ``<work-dir>/<name>/recipe.yaml`` and runs it as
``repro run --preset <that file>`` would. Rerunning the same command skips finished cells.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from evals.data import DataError
from repro.driver.recipes import (
    Recipe,
    _set_dotted,
    available_presets,
    load_recipe,
    parse_overrides,
    task_entry,
    validate_recipe,
)
from repro.runtime.store import atomic_write_bytes

DEFAULT_PRESET = "quick"
DEFAULT_METHODS = ("base", "sft", "s3ft")


def compare_recipe(preset: str, task: str, *, model: str | None = None, train: int | None = None,
                   test: int | None = None, methods: list[str] | None = None, seeds: list[int] | None = None,
                   name: str | None = None, overrides: list[str] | None = None) -> dict:
    """The recipe (as a YAML-ready dict) of a comparison: `preset` with its tasks replaced by `task`."""

    if not Path(preset).is_file() and preset not in available_presets():
        raise DataError(f"no preset {preset!r} (available: {', '.join(available_presets())}); pass --preset")
    base = load_recipe(preset)
    task_name, settings = task_entry(task, {})
    # Subset sizes follow the preset's first task unless given: the preset sized its grid for its hardware.
    first = next(iter(base.tasks.values()), None) or {}
    settings = {**{k: first[k] for k in ("train", "test") if k in first}, **settings}
    if train is not None:
        settings["train"] = train
    if test is not None:
        settings["test"] = test
    raw = base.to_dict()
    raw.update(name=name or f"compare-{task_name}", model=model or base.model, tasks={task_name: settings},
               methods=list(methods or DEFAULT_METHODS),
               description=f"repro compare: {task_name} on {model or base.model} (preset {base.name}'s settings)")
    if seeds:
        raw["seeds"] = list(seeds)
    raw["evaluation"] = {**raw.get("evaluation", {}), "cross_task": False}
    for key, value in parse_overrides(overrides):      # into the written recipe, so it alone reproduces the run
        _set_dotted(raw, key, value)
    if not isinstance(raw["name"], str) or not raw["name"] or "/" in raw["name"] or raw["name"].startswith("."):
        raise DataError(f"--name {raw['name']!r}: must be a folder name (no '/', not starting with '.')")
    unknown = set(raw) - {f.name for f in fields(Recipe)}
    if unknown:
        raise DataError(f"overrides: unknown recipe keys {sorted(unknown)}")
    validate_recipe(Recipe(source="repro compare", **raw))      # before the recipe file is written
    return raw


def write_recipe(raw: dict, work_dir: Path) -> Path:
    path = Path(work_dir) / raw["name"] / "recipe.yaml"
    header = "# written by `python -m repro compare`; rerun that command (or `repro run --preset <this file>`)\n"
    atomic_write_bytes(path, (header + yaml.safe_dump(raw, sort_keys=False)).encode("utf-8"))
    return path

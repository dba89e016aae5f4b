"""The grid: every (task, method, seed) cell of a recipe, run by a local or a Ray executor, with a live view.

Order: the base cells first (they fill the caches every other cell reads: the base model's test answers and
benchmark scores), then task by task, method by method, seed by seed. Finished cells are skipped, so rerunning the
same command after a kill (SIGKILL included) completes the grid with the results an uninterrupted run gives.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repro.cell import Cell, CellRunner
from repro.recipes import Recipe
from repro.store import atomic_write_json

log = logging.getLogger(__name__)

BASE_SEED = 0    # the base model has no seed: its cells are always seed 0


def plan(recipe: Recipe, tasks: Sequence[str] | None = None, methods: Sequence[str] | None = None,
         seeds: Sequence[int] | None = None) -> list[Cell]:
    tasks = list(tasks or recipe.tasks)
    methods = list(methods or recipe.methods)
    seeds = list(seeds if seeds is not None else recipe.seeds)
    for t in tasks:
        if t not in recipe.tasks:
            raise ValueError(f"task {t!r} is not in preset {recipe.name} (it has {list(recipe.tasks)})")
    cells = [Cell(recipe.name, t, "base", BASE_SEED) for t in tasks if "base" in methods]
    cells += [Cell(recipe.name, t, m, s) for t in tasks for m in methods if m != "base" for s in seeds]
    return cells


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Progress:
    """Cells done / running / left, the current stage, and an ETA from the cells computed in this run."""

    cells: list[Cell]
    status_path: Path | None = None
    stream: object = sys.stderr
    done: set[Cell] = field(default_factory=set)
    failed: dict[Cell, str] = field(default_factory=dict)
    running: dict[Cell, str] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    started: dict[Cell, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.time)

    def eta(self) -> float | None:
        left = len(self.cells) - len(self.done) - len(self.failed)
        if not self.durations:
            return None
        return left * sum(self.durations) / len(self.durations)

    def line(self) -> str:
        left = len(self.cells) - len(self.done) - len(self.failed) - len(self.running)
        running = ", ".join(f"{c.label}: {s}" for c, s in self.running.items()) or "-"
        failed = f" | {len(self.failed)} failed" if self.failed else ""
        return (f"[{self.cells[0].preset if self.cells else '?'}] {len(self.done)}/{len(self.cells)} done{failed} | "
                f"running {running} | {left} left | elapsed {_fmt(time.time() - self.t0)} | ETA {_fmt(self.eta())}")

    def update(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        if self.status_path is not None:
            atomic_write_json(self.status_path, {
                "line": self.line(), "done": sorted(c.label for c in self.done),
                "failed": {c.label: e for c, e in self.failed.items()},
                "running": {c.label: s for c, s in self.running.items()},
                "left": sorted(c.label for c in self.cells if c not in self.done | set(self.failed)
                               | set(self.running)), "eta_s": self.eta(), "updated": time.time()})

    def stage(self, cell: Cell, stage: str) -> None:
        self.started.setdefault(cell, time.time())
        self.running[cell] = stage
        self.update()

    def finish(self, cell: Cell, *, computed: bool, error: str | None = None) -> None:
        self.running.pop(cell, None)
        if error:
            self.failed[cell] = error
        else:
            self.done.add(cell)
            if computed and cell in self.started:
                self.durations.append(time.time() - self.started[cell])
        self.update()


def dry_run(runner: CellRunner, cells: Sequence[Cell], stream=sys.stdout) -> None:
    from tabulate import tabulate  # noqa: PLC0415

    rows = [(c.task, c.method, c.seed, runner.state(c), runner.paths(c)["result"]) for c in cells]
    print(tabulate(rows, headers=["task", "method", "seed", "state", "result folder"]), file=stream)
    counts = {s: sum(r[3] == s for r in rows) for s in ("done", "trained", "targets", "todo")}
    print(f"\n{len(cells)} cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=stream)


def run_local(runner: CellRunner, cells: Sequence[Cell], progress: Progress) -> None:
    runner.on_stage = progress.stage
    for cell in cells:
        if runner.state(cell) == "done":
            progress.finish(cell, computed=False)
            continue
        try:
            runner.run(cell)
            progress.finish(cell, computed=True)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one broken cell must not lose the rest of a long grid
            log.error("cell %s failed:\n%s", cell.label, traceback.format_exc())
            progress.finish(cell, computed=True, error=f"{type(e).__name__}: {e}")


def _ray_cell(recipe_dict: dict, recipe_source: str, cell: Cell, data_dir: str | None, work_root: str,
              results_root: str) -> tuple[Cell, str | None]:
    from repro.recipes import Recipe  # noqa: PLC0415

    recipe = Recipe(source=recipe_source, **recipe_dict)
    runner = CellRunner(recipe, data_dir=Path(data_dir) if data_dir else None, work_root=Path(work_root),
                        results_root=Path(results_root), progress=False)
    try:
        runner.run(cell)
        return cell, None
    except Exception as e:
        return cell, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"


def run_ray(runner: CellRunner, cells: Sequence[Cell], progress: Progress, *, address: str | None = None,
            num_cpus: int | None = None) -> None:
    """Cells as Ray tasks, each declaring one GPU when the cluster has GPUs. Base cells run first (they fill
    shared caches); then every other cell is submitted at once and the cluster schedules them."""
    import ray  # noqa: PLC0415

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    remote = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=0)(_ray_cell)
    args = (runner.recipe.to_dict(), runner.recipe.source, str(runner.data_dir) if runner.data_dir else None,
            str(runner.work.parent), str(runner.results.parent))
    todo = []
    for cell in cells:
        if runner.state(cell) == "done":
            progress.finish(cell, computed=False)
        else:
            todo.append(cell)
    for wave in ([c for c in todo if c.method == "base"], [c for c in todo if c.method != "base"]):
        pending = {}
        for cell in wave:
            progress.stage(cell, "queued on ray")
            pending[remote.remote(args[0], args[1], cell, *args[2:])] = cell
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell, error = ray.get(ready[0])
            pending.pop(ready[0])
            if error:
                log.error("cell %s failed on ray:\n%s", cell.label, error)
            progress.finish(cell, computed=True, error=error.splitlines()[0] if error else None)

"""The grid: every (task, method, seed) cell of a recipe, run by a local or a Ray executor, with a live view.

Order: the base cells first (they fill the caches every other cell reads: the base model's test answers and
benchmark scores), then task by task, method by method, seed by seed. Finished cells are skipped, so rerunning the
same command after a kill (SIGKILL included) completes the grid with the results an uninterrupted run gives.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from evals.data import DataError
from methods.registry import get_method, method_ids
from repro.driver.carry import StageCarry
from repro.driver.cell import Cell, CellRunner
from repro.driver.recipes import Recipe
from repro.runtime.models import CACHE_ENV, cache_root
from repro.runtime.provenance import hardware
from repro.runtime.runlog import output_to_log
from repro.runtime.store import atomic_write_json, read_jsonl
from repro.runtime.threads import THREADS_ENV, pin_threads

log = logging.getLogger(__name__)

BASE_SEED = 0    # the base model has no seed: its cells are always seed 0
CARRY_EVERY_S = 15 * 60.0  # `run --commit` carries a running stage's resume points at most this often (carry.py)
DETAIL_EVERY_S = 60.0   # a non-live progress display prints within-stage progress (training steps) at most this often


def plan(recipe: Recipe, tasks: Sequence[str] | None = None, methods: Sequence[str] | None = None,
         seeds: Sequence[int] | None = None) -> list[Cell]:
    tasks = list(tasks or recipe.tasks)
    methods = list(methods or recipe.methods)
    for t in tasks:
        if t not in recipe.tasks:
            raise DataError(f"--tasks: {t!r} is not a task of preset {recipe.name} (it has "
                            f"{', '.join(recipe.tasks)})")
    for m in methods:
        if m not in method_ids():
            raise DataError(f"--methods: unknown method {m!r}; known: {', '.join(method_ids())}")
    cells = [Cell(recipe.name, t, "base", BASE_SEED) for t in tasks if "base" in methods]
    trained = [(i, Cell(recipe.name, t, m, s)) for t in tasks for m in methods if m != "base"
               for i, s in enumerate(recipe.seeds_of(m, None if seeds is None else list(seeds)))]
    # Seed-major: every method's first seed before any method's second, so a grid that spans sessions has a whole
    # one-seed comparison committed as early as possible (sorted() is stable: task and method order stay).
    return cells + [c for _, c in sorted(trained, key=lambda x: x[0])]


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Progress:
    """Cells done / running / left, the current stage, and an ETA from the cells computed in this run.

    One display per run: on a terminal (`live`) a single line redrawn every second; otherwise one line per change
    (logs, CI). progress.json mirrors it for other programs (and the resume tests)."""

    cells: list[Cell]
    status_path: Path | None = None
    stream: object = sys.stderr
    live: bool = False
    quiet: bool = False
    done: set[Cell] = field(default_factory=set)
    failed: dict[Cell, str] = field(default_factory=dict)
    running: dict[Cell, str] = field(default_factory=dict)
    durations: dict[Cell, float] = field(default_factory=dict)
    started: dict[Cell, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._stage_clock: dict[Cell, tuple[str, float, float]] = {}
        self._last_detail = 0.0
        # called with (cell, record) as each stage ends: run_local journals them in the cell's work folder
        self.stage_sink: Callable[[Cell, dict], None] | None = None
        if self.live and not self.quiet:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _estimate(self, cell: Cell) -> float | None:
        """A cell's expected duration: the mean of computed cells of its kind (base or trained), else of any."""
        same = [d for c, d in self.durations.items() if (c.method == "base") == (cell.method == "base")]
        pool = same or list(self.durations.values())
        return sum(pool) / len(pool) if pool else None

    def eta(self) -> float | None:
        total = 0.0
        for cell in self.cells:
            if cell in self.done or cell in self.failed:
                continue
            est = self._estimate(cell)
            if est is None:
                return None
            total += max(0.0, est - (time.time() - self.started[cell])) if cell in self.running else est
        return total

    def line(self) -> str:
        finished = len(self.done) + len(self.failed)
        running = ", ".join(f"{c.label}: {s} ({_fmt(time.time() - self.started.get(c, time.time()))})"
                            for c, s in self.running.items()) or "-"
        failed = f", {len(self.failed)} failed" if self.failed else ""
        return (f"[{self.cells[0].preset if self.cells else '?'}] {finished}/{len(self.cells)} cells{failed} | "
                f"{running} | elapsed {_fmt(time.time() - self.t0)} | ETA {_fmt(self.eta())}")

    def _draw(self, *, final: bool = False) -> None:
        if self.quiet:
            return
        text = self.line()
        if self.live:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            print("\r\x1b[2K" + text[:width], end="\n" if final else "", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._draw()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            if self.live:
                self._draw(final=True)

    def update(self) -> None:
        with self._lock:
            self._draw()
            if self.status_path is not None:
                atomic_write_json(self.status_path, {
                    "line": self.line(), "done": sorted(c.label for c in self.done),
                    "failed": {c.label: e for c, e in self.failed.items()},
                    "running": {c.label: s for c, s in self.running.items()},
                    "left": sorted(c.label for c in self.cells if c not in self.done | set(self.failed)
                                   | set(self.running)), "eta_s": self.eta(), "updated": time.time()})

    def end_stage(self, cell: Cell) -> None:
        """run.log (and the stage sink) get the running stage's wall and CPU seconds (CPU time is less affected by
        other jobs than wall time, but threads spinning on oversubscribed cores still count)."""
        prev = self._stage_clock.pop(cell, None)
        if prev is not None:
            wall, cpu = time.time() - prev[1], time.process_time() - prev[2]
            log.info("stage %s %s: %.1f s wall, %.1f s cpu", cell.label, prev[0], wall, cpu)
            if self.stage_sink is not None:
                self.stage_sink(cell, {"stage": prev[0], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                                       "ended": round(time.time()), "pid": os.getpid(),
                                       "threads": os.environ.get(THREADS_ENV), "loadavg": _loadavg()})

    def stage(self, cell: Cell, stage: str) -> None:
        self.started.setdefault(cell, time.time())
        self.end_stage(cell)
        self._stage_clock[cell] = (stage, time.time(), time.process_time())
        self.running[cell] = stage
        self.update()

    def detail(self, cell: Cell, text: str) -> None:
        """Progress within the running stage (training steps): shown on the line beside the stage, whose clock goes
        on. A live line redraws every second anyway; otherwise (logs, CI) at most one line a minute."""
        stage = self._stage_clock.get(cell, ("?",))[0]
        self.running[cell] = f"{stage} {text}"
        now = time.time()
        if self.live or now - self._last_detail >= DETAIL_EVERY_S:
            self._last_detail = now
            self.update()

    def finish(self, cell: Cell, *, computed: bool, error: str | None = None) -> None:
        self.end_stage(cell)
        self.running.pop(cell, None)
        if error:
            self.failed[cell] = error
        else:
            self.done.add(cell)
            if computed and cell in self.started:
                self.durations[cell] = time.time() - self.started[cell]
        self.update()


def dry_run(runner: CellRunner, cells: Sequence[Cell], stream=sys.stdout) -> None:
    rows = [(c.task, c.method, c.seed, runner.state(c), runner.paths(c)["result"]) for c in cells]
    print(tabulate(rows, headers=["task", "method", "seed", "state", "result folder"]), file=stream)
    counts = {s: sum(r[3] == s for r in rows) for s in ("done", "trained", "targets", "todo")}
    print(f"\n{len(cells)} cells: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=stream)
    foreign = foreign_results(runner, cells)
    if foreign:
        print(f"\n{replaces_message(foreign)}", file=stream)


def foreign_results(runner: CellRunner, cells: Sequence[Cell]) -> list[tuple[Path, str, str]]:
    """(result file, its config hash, this run's) of every cell whose folder holds another configuration's result."""
    out = []
    for c in cells:
        found = runner.foreign_result(c)
        if found is not None:
            out.append((runner.paths(c)["result"] / "result.json", found, runner.cell_hash(c)))
    return out


def replaces_message(foreign: Sequence[tuple[Path, str, str]]) -> str:
    """What running would replace, and the ways out: keep both (another results folder) or replace on purpose."""
    path, found, ours = foreign[0]
    more = f" and {len(foreign) - 1} more cell(s)" if len(foreign) > 1 else ""
    return (f"{path} holds a result of another configuration (config_hash {found}; this run's: {ours}){more}: running "
            f"would replace it. Keep both with another --results-dir (or a preset of your own), or pass --overwrite "
            f"to replace it")


class GitCommitter:
    """`repro run --commit`: each finished cell's result files are committed the moment the cell completes, so a long
    study survives a killed session, and a fresh clone resumes from the committed cells (a cell is done when its
    result.json is there with the recipe's config hash: runs/ caches are not needed for that).

    Only the cell's own files are committed (`git commit -- <paths>`): whatever else is staged stays staged."""

    def __init__(self, results_root: Path) -> None:
        self.results_root = Path(results_root).resolve()
        self.results_root.mkdir(parents=True, exist_ok=True)
        top = self._git("rev-parse", "--show-toplevel", cwd=self.results_root)
        if top.returncode != 0:
            raise RuntimeError(f"--commit: {self.results_root} is not inside a git work tree")
        self.repo = Path(top.stdout.strip())
        probe = self.results_root / "result.json"
        if self._git("check-ignore", "-q", str(probe)).returncode == 0:
            raise RuntimeError(f"--commit: git ignores {self.results_root} (runs/ is ignored on purpose); pass "
                               f"--results-dir results to write where committed results live")

    def _git(self, *args: str, cwd: Path | None = None):
        return subprocess.run(["git", *args], cwd=cwd or self.repo, capture_output=True, text=True)

    def __call__(self, runner: CellRunner, cell: Cell) -> str | None:
        """Commit the cell's result folder; returns the commit's short hash (None: nothing new to commit)."""
        folder = runner.paths(cell)["result"].resolve()
        paths = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
        if not paths:
            raise RuntimeError(f"--commit: {folder} holds no result files")
        return self.commit_paths(paths, f"{cell.preset}: cell {cell.label} (repro run --commit)")

    def commit_paths(self, files: Sequence[Path], message: str) -> str | None:
        """Commit exactly `files` (whatever else is staged stays staged); the short hash, or None when the same
        bytes are committed already."""
        paths = [str(Path(p).resolve().relative_to(self.repo)) for p in files]
        r = self._git("add", "--", *paths)
        if r.returncode != 0:
            raise RuntimeError(f"git add failed: {r.stderr.strip()}")
        if self._git("diff", "--cached", "--quiet", "--", *paths).returncode == 0:
            return None                 # the same bytes are committed already
        r = self._git("commit", "-q", "-m", message, "--", *paths)
        if r.returncode != 0:
            raise RuntimeError(f"git commit failed ({message}): {(r.stderr or r.stdout).strip()}")
        return self._git("rev-parse", "--short", "HEAD").stdout.strip()


def _committed(commit, runner: CellRunner, cell: Cell) -> None:
    """Commit a finished cell when asked; a failed commit is reported, never fatal (the files are on disk)."""
    if commit is None:
        return
    try:
        sha = commit(runner, cell)
        log.info("cell %s committed: %s", cell.label, sha or "unchanged")
    except Exception as e:
        log.error("cell %s finished but was not committed: %s", cell.label, e)
        print(f"warning: cell {cell.label} finished but was not committed: {e}", file=sys.stderr, flush=True)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _journal(runner: CellRunner, cell: Cell) -> Path:
    return runner.paths(cell)["train"] / "stage_times.jsonl"


def _journal_stage(runner: CellRunner, cell: Cell, record: dict) -> None:
    path = _journal(runner, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_timing(runner: CellRunner, cell: Cell, state_at_start: str) -> None:
    """timing.json beside a finished cell's result: the wall and CPU seconds of every stage a run on this machine
    finished for the cell (the journal in its work folder, so a run killed mid-cell and resumed loses only the stage
    it was killed in), the machine and its load. CPU seconds (the driver process, all its threads) are a better
    guide than wall time when the cores were shared, but an overestimate when they were oversubscribed. A stage
    shared with other cells (a task's own answers) is counted in the cell that ran it. The journal is consumed: a
    later rerun of the cell starts a new one."""
    path = _journal(runner, cell)
    stages = read_jsonl(path) if path.is_file() else []
    atomic_write_json(runner.paths(cell)["result"] / "timing.json", {
        "cell": cell.label, "state_at_start": state_at_start, "stages": stages,
        "wall_s": round(sum(s["wall_s"] for s in stages), 1), "cpu_s": round(sum(s["cpu_s"] for s in stages), 1),
        "hardware": hardware(), "loadavg_at_end": _loadavg()})
    if path.is_file():
        path.rename(path.with_name(f"stage_times.consumed-{int(time.time())}.jsonl"))


def run_local(runner: CellRunner, cells: Sequence[Cell], progress: Progress, commit=None) -> None:
    runner.on_stage = progress.stage
    runner.on_progress = progress.detail
    progress.stage_sink = lambda cell, record: _journal_stage(runner, cell, record)
    for cell in cells:
        state = runner.state(cell)
        if state == "done":
            progress.finish(cell, computed=False)
            continue
        try:
            runner.run(cell)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one broken cell must not lose the rest of a long grid
            log.error("cell %s failed:\n%s", cell.label, traceback.format_exc())
            progress.finish(cell, computed=True, error=f"{type(e).__name__}: {e}")
            continue
        progress.end_stage(cell)
        write_timing(runner, cell, state)
        _committed(commit, runner, cell)
        progress.finish(cell, computed=True)


def _ray_runner(recipe_dict: dict, recipe_source: str, data_dir: str | None, work_root: str, results_root: str,
                threads: int | None) -> CellRunner:

    pin_threads(threads)    # the driver's count, not the one Ray derives from the task's num_cpus
    recipe = Recipe(source=recipe_source, **recipe_dict)
    return CellRunner(recipe, data_dir=Path(data_dir) if data_dir else None, work_root=Path(work_root),
                      results_root=Path(results_root), progress=False)


def _ray_cell(recipe_dict: dict, recipe_source: str, cell: Cell, data_dir: str | None, work_root: str,
              results_root: str, threads: int | None = None) -> tuple[Cell, str | None]:
    """One whole cell in a Ray worker. A Python error comes back as text (the cell failed, the worker lives); a
    dead worker (segfault, OOM kill, lost node) is Ray's to retry, and every stage resumes from its artefacts."""
    runner = _ray_runner(recipe_dict, recipe_source, data_dir, work_root, results_root, threads)
    try:
        runner.run(cell)
        return cell, None
    except Exception as e:
        return cell, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"


def _ray_targets(recipe_dict: dict, recipe_source: str, cells: list[Cell], data_dir: str | None, work_root: str,
                 results_root: str, threads: int | None = None) -> dict[str, str | None]:
    """The targets of every trained method of one task, one method after another in one worker: SSR, S3FT and
    SDFT ask the base model for the same answers (and paraphrases) of the same training prompts, so run side by
    side they would each generate them; in sequence the first fills the generation cache and the others read it.
    Returns {method: error text or None}."""
    runner = _ray_runner(recipe_dict, recipe_source, data_dir, work_root, results_root, threads)
    errors: dict[str, str | None] = {}
    for cell in cells:
        try:
            runner.build_targets(cell)
            errors[cell.method] = None
        except Exception as e:
            errors[cell.method] = f"targets: {type(e).__name__}: {e}\n{traceback.format_exc()}"
    return errors


# Variables a Ray worker needs to see what the driver sees: the model/generation cache, the data directory, the
# sandbox policy, thread counts, and the Hugging Face token and cache (Mistral is gated; offline flags).
FORWARDED_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE",
                 "HF_DATASETS_OFFLINE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def ray_runtime_env(data_dir: Path | None, threads: int | None) -> dict:
    """The task-level runtime_env: the driver's S3FT_* and Hugging Face variables, with the cache and data
    directories made absolute (a worker's working directory is not the driver's). On a cluster these paths, like
    the work and results folders, must name a filesystem every node mounts."""

    env = {k: v for k, v in os.environ.items() if k.startswith("S3FT_") or k in FORWARDED_ENV}
    env[CACHE_ENV] = str(cache_root().resolve())
    if data_dir is not None:
        env["S3FT_DATA_DIR"] = str(Path(data_dir).resolve())
    if threads:
        env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "S3FT_THREADS")})
    return {"env_vars": env}


def run_ray(runner: CellRunner, cells: Sequence[Cell], progress: Progress, *, address: str | None = None,
            num_cpus: int | None = None, threads: int | None = None, max_retries: int = 2,
            commit=None) -> None:
    """Cells as Ray tasks, each declaring one GPU when the cluster has GPUs.

    Order: one base cell first (it fills the caches every other cell reads: the base model's test answers on every
    task and its benchmark scores), then the other base cells; meanwhile one targets task per task builds the
    targets of all its trained methods in sequence (shared base generations, made once). A task's trained cells
    start once every base cell is finished and its targets exist, and the cluster schedules them.

    A worker that dies is retried `max_retries` times (the cell resumes from its artefacts); a cell that still
    fails, by a Python error or a dead worker, is reported failed while the others run on."""
    import ray  # noqa: PLC0415
    from ray.exceptions import RayError  # noqa: PLC0415

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    options = {"num_gpus": gpus, "num_cpus": 1, "max_retries": max_retries,
               "runtime_env": ray_runtime_env(runner.data_dir, threads)}
    cell_task = ray.remote(_ray_cell).options(**options)
    targets_task = ray.remote(_ray_targets).options(**options)
    # Absolute paths: a worker (on this node or another) does not share the driver's working directory.
    args = (runner.recipe.to_dict(), runner.recipe.source)
    paths = (str(Path(runner.data_dir).resolve()) if runner.data_dir else None, str(runner.work.parent.resolve()),
             str(runner.results.parent.resolve()))

    todo = []
    for cell in cells:
        if runner.state(cell) == "done":
            progress.finish(cell, computed=False)
        else:
            todo.append(cell)
    base_queue = [c for c in todo if c.method == "base"]
    trained: dict[str, list[Cell]] = {}
    for c in todo:
        if c.method != "base":
            trained.setdefault(c.task, []).append(c)
    # The shared prerequisite of a task: targets of each of its trained methods that has none yet.
    need_targets: dict[str, list[Cell]] = {}
    for task, task_cells in trained.items():
        firsts = {c.method: c for c in reversed(task_cells)}      # the first cell of each method
        need = [firsts[m] for m in dict.fromkeys(c.method for c in task_cells)
                if get_method(m).trains and runner.state(firsts[m]) == "todo"]
        if need:
            need_targets[task] = need
    targets_error: dict[tuple[str, str], str] = {}
    pending: dict = {}          # ObjectRef -> ("cell", cell) | ("targets", task)

    def submit_cell(cell: Cell) -> None:
        progress.stage(cell, "queued on ray")
        pending[cell_task.remote(*args, cell, *paths, threads)] = ("cell", cell)

    def release_trained(task: str) -> None:
        for cell in trained.pop(task, []):
            err = targets_error.get((task, cell.method))
            if err:
                progress.finish(cell, computed=True, error=err.splitlines()[0])
            else:
                submit_cell(cell)

    def release_ready() -> None:
        base_busy = base_queue or any(k == "cell" and c.method == "base" for k, c in pending.values())
        if not base_busy:
            for task in [t for t in trained if not need_targets.get(t)]:
                release_trained(task)

    if base_queue:
        submit_cell(base_queue.pop(0))
    for task, need in need_targets.items():
        for cell in need:
            progress.stage(cell, "targets (shared) on ray")
        pending[targets_task.remote(*args, need, *paths, threads)] = ("targets", task)
    release_ready()             # nothing to wait for when no base cell and no targets are due
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        kind, what = pending.pop(ready[0])
        try:
            value = ray.get(ready[0])
            crashed = None
        except RayError as e:       # the worker died on every attempt (or the task was lost): this one fails
            value, crashed = None, f"{type(e).__name__}: {e}"
        if kind == "cell":
            error = crashed or value[1]
            if error:
                log.error("cell %s failed on ray:\n%s", what.label, error)
            else:
                _committed(commit, runner, what)
            progress.finish(what, computed=True, error=error.splitlines()[0] if error else None)
            if what.method == "base" and base_queue:
                for cell in base_queue:     # the first base cell filled the shared caches: the rest in parallel
                    submit_cell(cell)
                base_queue = []
        else:
            task = what
            for cell in need_targets[task]:
                error = crashed or value.get(cell.method)
                if error:
                    log.error("targets of %s/%s failed on ray:\n%s", task, cell.method, error)
                    targets_error[(task, cell.method)] = error if error.startswith("targets") else f"targets: {error}"
                else:
                    progress.stage(cell, "targets done, waiting for the base cells")
            need_targets[task] = []
        release_ready()


class DriverBusy(RuntimeError):
    """Another driver process holds the preset's work folder."""


def _every(seconds: float, action: Callable[[Cell], object]) -> Callable[[Cell], None]:
    """`action` at most once per `seconds` (the clock starts when this is made); never if `seconds` <= 0."""
    last = [time.monotonic()]

    def tick(cell: Cell) -> None:
        now = time.monotonic()
        if seconds > 0 and now - last[0] >= seconds:
            action(cell)
            last[0] = time.monotonic()     # after the commit: a slow commit does not shorten the next wait
    return tick


def run_grid(runner: CellRunner, cells: Sequence[Cell], log_path: Path, *, executor: str = "local",
             ray_address: str | None = None, ray_num_cpus: int | None = None, threads: int | None = None,
             quiet: bool = False, commit=None, carry_every_s: float = CARRY_EVERY_S) -> Progress:
    """Run `cells` with the local or the Ray executor and return the finished Progress (done and failed cells).

    Holds the preset's driver lock for the whole run: two drivers of one preset would write the same files, and
    only the lock holder may clean up temporaries a killed run left. Library output goes to `log_path`; the
    terminal shows the progress line."""
    lock = runner.work / ".driver.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DriverBusy(f"another `repro run` of preset {runner.recipe.name} is using {runner.work}") from None
        runner.clean_interrupted_writes()
        carry = None
        if commit is not None and executor == "local":   # Ray workers' stages stay in their work folders
            carry = StageCarry(work=runner.work, cache_root=runner.work.parent / "cache", results=runner.results,
                               commit=commit.commit_paths,
                               touched=lambda: runner.cache.written | runner.bench_written)
            carry.restore()
            carry.save("stages finished before this run")  # e.g. by a run without --commit on this machine
            runner.on_stage_done = lambda cell, stage: carry.save(f"{cell.label}: {stage}")
            runner.on_tick = _every(carry_every_s, lambda cell: carry.save_partial(f"{cell.label}: its running stage"))
        with output_to_log(log_path) as terminal:
            progress = Progress(cells, status_path=runner.work / "progress.json", stream=terminal,
                                live=terminal.isatty(), quiet=quiet)
            try:
                progress.update()
                if executor == "ray":
                    run_ray(runner, cells, progress, address=ray_address, num_cpus=ray_num_cpus, threads=threads,
                            commit=commit)
                else:
                    run_local(runner, cells, progress, commit=commit)
            except KeyboardInterrupt:
                if carry is not None:            # a stopped run keeps what its running stage has done so far
                    carry.save_partial("an interrupted stage's resume points")
                raise
            finally:
                progress.close()
    return progress

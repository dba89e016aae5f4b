"""The Ray executor survives: a worker killed mid-cell is retried, a cell whose worker dies on every attempt is
reported failed while the others finish, workers see the driver's environment and absolute paths, and the base
model's work for a task's trained methods (their targets) runs once, before those cells fan out.

The cell and targets bodies are replaced by light stand-ins (the real ones are exercised by
tests/test_driver.py::test_ray_executor_runs_cells_as_ray_tasks); the scheduling, retries, error handling and
runtime_env under test are run_ray's own, on a real local Ray instance."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from repro.driver import grid
from repro.driver.cell import CellRunner
from repro.driver.recipes import load_recipe

ray = pytest.importorskip("ray")


def test_ray_grid_retries_a_dead_worker_reports_a_lost_cell_and_shares_base_work(tmp_path, data_dir, monkeypatch):
    log_dir = tmp_path / "events"
    log_dir.mkdir()
    events, markers = str(log_dir), str(tmp_path)
    crash_once, crash_always = "squad/sft/seed0", "gsm8k/s3ft/seed0"

    # Everything the stand-ins use is local: Ray ships closures by value, but would import this module by name.
    def _record(log_dir: str, entry: dict) -> None:
        """One file per event: a worker that dies leaves no half-written shared log behind."""
        path = Path(log_dir) / f"{time.time_ns()}-{os.getpid()}.json"
        path.write_text(json.dumps({**entry, "t": time.time(), "pid": os.getpid()}))

    def fake_cell(recipe_dict, recipe_source, cell, data_dir, work_root, results_root, threads=None):
        env = {k: os.environ.get(k) for k in ("S3FT_CACHE", "S3FT_DATA_DIR", "HF_TOKEN", "S3FT_TEST_FLAG")}
        _record(events, {"kind": "cell", "label": cell.label, "event": "start", "env": env,
                         "paths": [data_dir, work_root, results_root]})
        marker = Path(markers) / f"crashed-{cell.task}-{cell.method}"
        if cell.label == crash_always or (cell.label == crash_once and not marker.exists()):
            marker.touch()
            os._exit(1)                 # the worker dies mid-cell, as on a segfault or an OOM kill
        time.sleep(0.2)
        _record(events, {"kind": "cell", "label": cell.label, "event": "end"})
        return cell, None

    def fake_targets(recipe_dict, recipe_source, cells, data_dir, work_root, results_root, threads=None):
        _record(events, {"kind": "targets", "task": cells[0].task, "methods": [c.method for c in cells],
                         "event": "start"})
        time.sleep(0.5)
        _record(events, {"kind": "targets", "task": cells[0].task, "event": "end"})
        return {c.method: None for c in cells}

    monkeypatch.setattr(grid, "_ray_cell", fake_cell)
    monkeypatch.setattr(grid, "_ray_targets", fake_targets)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("S3FT_TEST_FLAG", "carried")
    monkeypatch.chdir(tmp_path)     # relative folders below: the workers must get them absolute
    recipe = load_recipe("smoke")
    runner = CellRunner(recipe, data_dir=Path(os.path.relpath(data_dir, tmp_path)), work_root=Path("runs"),
                        results_root=Path("results"), progress=False)
    cells = grid.plan(recipe, ["squad", "gsm8k"], ["base", "sft", "s3ft", "ssr"], [0, 1])
    progress = grid.Progress(cells, quiet=True)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.time()
        grid.run_ray(runner, cells, progress, max_retries=1)
        took = time.time() - t0
    finally:
        ray.shutdown()

    log = [json.loads(p.read_text()) for p in sorted(log_dir.iterdir())]
    log.sort(key=lambda e: e["t"])
    starts = {}
    for e in log:
        if e["kind"] == "cell" and e["event"] == "start":
            starts.setdefault(e["label"], []).append(e)
    # The retried cell ran twice and finished; the one that always kills its worker ran 1 + max_retries times and
    # is reported failed; every other cell finished regardless.
    assert len(starts[crash_once]) == 2
    assert len(starts[crash_always]) == 2
    assert set(progress.failed) == {c for c in cells if c.label == crash_always}
    assert "WorkerCrashedError" in progress.failed[next(iter(progress.failed))]
    assert progress.done == set(cells) - set(progress.failed)
    assert all(len(v) == 1 for k, v in starts.items() if k not in (crash_once, crash_always))

    # One targets task per task, holding every trained method, before any of that task's trained cells.
    targets = [e for e in log if e["kind"] == "targets" and e["event"] == "start"]
    assert sorted(e["task"] for e in targets) == ["gsm8k", "squad"]
    assert all(e["methods"] == ["sft", "s3ft", "ssr"] for e in targets)
    targets_end = {e["task"]: e["t"] for e in log if e["kind"] == "targets" and e["event"] == "end"}
    base_end = max(e["t"] for e in log if e["kind"] == "cell" and e["event"] == "end" and "/base/" in e["label"])
    first_base = min(starts[f"{t}/base/seed0"][0]["t"] for t in ("squad", "gsm8k"))
    second_base = max(starts[f"{t}/base/seed0"][0]["t"] for t in ("squad", "gsm8k"))
    assert second_base > first_base + 0.2, "the second base cell waits for the first (shared caches)"
    for label, runs in starts.items():
        if "/base/" not in label:
            assert runs[0]["t"] > targets_end[label.split("/")[0]] and runs[0]["t"] > base_end, label

    # The driver's environment and absolute paths reached the workers.
    from repro.runtime.models import cache_root

    env = starts["squad/sft/seed1"][0]["env"]
    assert env == {"S3FT_CACHE": str(cache_root().resolve()), "S3FT_DATA_DIR": str(Path(data_dir).resolve()),
                   "HF_TOKEN": "hf_test_token", "S3FT_TEST_FLAG": "carried"}
    d, work, results = starts["squad/sft/seed1"][0]["paths"]
    assert d == str(Path(data_dir).resolve())
    assert work == str(tmp_path / "runs") and results == str(tmp_path / "results")
    assert took < 120

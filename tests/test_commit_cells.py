"""`repro run --commit`: every finished cell is committed at once (only its files), every finished stage is carried
under results/<preset>/_resume/, and a fresh clone resumes from the committed cells and stages without the runs/
caches. On the tiny in-process model, in a throwaway git repository."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_repro

# the smallest grid with a trained cell: one optimiser step, two test items, two benchmark items
CELLS = ["--preset", "smoke", "--tasks", "squad", "--methods", "base", "sft", "--quiet", "--no-table",
         "tasks.squad.train=4", "tasks.squad.test=2", "evaluation.benchmarks={hellaswag: {limit: 2}}",
         "evaluation.forgetting_prompts=1", "evaluation.cross_domain_kl_texts=1"]


def git(repo, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo(tmp_path):
    r = tmp_path / "study"
    r.mkdir()
    git(r, "init", "-q")
    git(r, "config", "user.email", "t@example.org")
    git(r, "config", "user.name", "t")
    (r / ".gitignore").write_text("runs/\n")
    (r / "notes.txt").write_text("work in progress\n")
    git(r, "add", ".gitignore")
    git(r, "commit", "-qm", "init")
    git(r, "add", "notes.txt")            # staged, not ours to commit: a cell commit must leave it staged
    return r


def test_each_cell_is_committed_and_a_fresh_clone_resumes(repo, tmp_path, data_dir):
    # --carry-every 0.0001 min: every progress report carries the running stage's resume points
    proc = run_repro("run", *CELLS, "--data-dir", str(data_dir), "--work-dir", str(repo / "runs"),
                     "--results-dir", str(repo / "results"), "--commit", "--carry-every", "0.0001")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = git(repo, "log", "--format=%s").splitlines()
    assert [m for m in log if ": cell " in m] == ["smoke: cell squad/sft/seed0 (repro run --commit)",
                                                  "smoke: cell squad/base/seed0 (repro run --commit)"]
    assert log[0] == "smoke: cell squad/sft/seed0 (repro run --commit)"
    carried = [m for m in log if ": carry " in m]
    assert any("squad/sft/seed0: targets" in m for m in carried)
    assert any("squad/sft/seed0: training" in m for m in carried)
    assert any(": its running stage" in m for m in carried)
    carried_now = git(repo, "ls-files", "results/smoke/_resume").split()
    assert not any("checkpoint" in f or "journal" in f for f in carried_now)   # their stages finished: dropped
    journals = git(repo, "log", "--format=", "--name-status", "--", "results/smoke/_resume/cache/benchmarks/journal")
    assert "A\t" in journals and "D\t" in journals, journals               # carried, then dropped
    for i, m in enumerate(log):
        if ": carry " in m:             # a stage's files only, all under _resume/
            files = git(repo, "show", "--name-only", "--format=", f"HEAD~{i}").split()
            assert files and all(f.startswith("results/smoke/_resume/") for f in files), (m, files)
    for cell in ("squad/sft/seed0", "squad/base/seed0"):
        rev = f"HEAD~{log.index(f'smoke: cell {cell} (repro run --commit)')}"
        files = git(repo, "show", "--name-only", "--format=", rev).split()
        assert files and all(f.startswith(f"results/smoke/{cell}/") for f in files)
        assert f"results/smoke/{cell}/result.json" in files and f"results/smoke/{cell}/items.jsonl.gz" in files
        timing = json.loads((repo / f"results/smoke/{cell}/timing.json").read_text())     # committed with it
        assert f"results/smoke/{cell}/timing.json" in files and timing["state_at_start"] == "todo"
        stages = [s["stage"] for s in timing["stages"]]
        assert "evaluate" in stages and ("train" in stages) == cell.endswith("sft/seed0")
        assert timing["cpu_s"] == round(sum(s["cpu_s"] for s in timing["stages"]), 1) > 0
        assert stages[-1] == "write" and "commit" not in stages
    assert "A  notes.txt" in git(repo, "status", "--porcelain")       # still staged, not committed
    assert git(repo, "status", "--porcelain", "--", "results") == ""  # nothing of the results left uncommitted

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / "runs").exists()                              # a fresh machine: no caches
    dry = run_repro("run", *CELLS, "--data-dir", str(data_dir), "--work-dir", str(clone / "runs"),
                    "--results-dir", str(clone / "results"), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "2 cells: 2 done, 0 trained, 0 targets, 0 todo" in dry.stdout
    again = run_repro("run", *CELLS, "--data-dir", str(data_dir), "--work-dir", str(clone / "runs"),
                      "--results-dir", str(clone / "results"), "--commit")
    assert again.returncode == 0, again.stderr[-3000:]
    assert git(clone, "log", "--format=%s") == git(repo, "log", "--format=%s")   # nothing redone, nothing new


def test_a_fresh_clone_resumes_an_unfinished_cell_at_its_carried_stage(repo, tmp_path, data_dir):
    """The sft cell's result is taken away in a clone with no runs/: its targets, adapter, answers and benchmark
    scores come back from _resume/, nothing is retrained or regenerated, and its items are the same bytes."""
    proc = run_repro("run", *CELLS, "--data-dir", str(data_dir), "--work-dir", str(repo / "runs"),
                     "--results-dir", str(repo / "results"), "--commit")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cell = "results/smoke/squad/sft/seed0"
    items = (repo / cell / "items.jsonl.gz").read_bytes()
    before = json.loads((repo / cell / "result.json").read_text())
    carried = git(repo, "ls-files", "results/smoke/_resume").split()
    assert "results/smoke/_resume/work/squad/sft/targets/targets_summary.json" in carried
    assert "results/smoke/_resume/work/squad/sft/seed0/train_log.json" in carried
    assert any(f.startswith("results/smoke/_resume/work/squad/sft/seed0/adapter/") for f in carried)
    assert any(f.startswith("results/smoke/_resume/cache/benchmarks/") for f in carried)
    assert any(f.startswith("results/smoke/_resume/cache/generations/") for f in carried)
    assert not any("checkpoint" in f or "journal" in f or f.endswith(".lock") for f in carried)

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(clone, "config", "user.email", "t@example.org")
    git(clone, "config", "user.name", "t")
    git(clone, "rm", "-rq", cell)
    git(clone, "commit", "-qm", "take the sft cell away")
    again = run_repro("run", *CELLS, "--data-dir", str(data_dir), "--work-dir", str(clone / "runs"),
                      "--results-dir", str(clone / "results"), "--commit")
    assert again.returncode == 0, again.stderr[-3000:]
    timing = json.loads((clone / cell / "timing.json").read_text())
    assert timing["state_at_start"] == "trained"
    assert not {"targets", "train"} & {s["stage"] for s in timing["stages"]}
    assert (clone / cell / "items.jsonl.gz").read_bytes() == items
    after = json.loads((clone / cell / "result.json").read_text())
    assert after["training"] == before["training"]
    seconds = after["in_domain"].pop("seconds")
    before["in_domain"].pop("seconds")
    assert after["in_domain"] == before["in_domain"] and seconds["generate"] < 1.0   # answers from the carried cache
    assert git(clone, "log", "-1", "--format=%s").strip() == "smoke: cell squad/sft/seed0 (repro run --commit)"


def test_commit_refuses_an_ignored_results_folder(repo, data_dir):
    proc = run_repro("run", *CELLS, "--data-dir", str(data_dir), "--work-dir", str(repo / "runs"), "--commit")
    assert proc.returncode == 2
    assert "git ignores" in proc.stderr and "--results-dir results" in proc.stderr
    assert not (repo / "runs" / "smoke" / "squad").exists()          # refused before any work


def test_a_fresh_clone_resumes_training_from_the_checkpoint_a_killed_run_carried(repo, tmp_path, data_dir):
    """The end-to-end path of a session killed mid-training: `run --commit` carries the running training's
    checkpoint, the run is SIGKILLed (no stop handler runs), and a fresh clone with no runs/ resumes from the
    carried checkpoint - redoing only the steps after it - to the same loss log, adapter and answers as a run that
    was never stopped. One torch thread in every run keeps the kernels' reduction order fixed (tests/test_resume.py
    says why bitwise is the bar)."""
    # 24 optimiser steps, a checkpoint after each, carried at every step's progress report
    cells = [*CELLS, "tasks.squad.train=24", "train.batch_size=1", "train.checkpoint_minutes=1e-9", "--threads", "1"]
    ckpt = "results/smoke/_resume/work/squad/sft/seed0/checkpoint.pt"
    straight = tmp_path / "straight"
    ref = run_repro("run", *cells, "--data-dir", str(data_dir), "--work-dir", str(straight / "runs"),
                    "--results-dir", str(straight / "results"))
    assert ref.returncode == 0, ref.stderr[-3000:]

    child = subprocess.Popen(
        [sys.executable, "-m", "repro", "run", *cells, "--data-dir", str(data_dir), "--work-dir",
         str(repo / "runs"), "--results-dir", str(repo / "results"), "--commit", "--carry-every", "0.0001"],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 600
    try:
        while child.poll() is None and time.monotonic() < deadline:
            if ckpt in git(repo, "ls-tree", "-r", "--name-only", "HEAD", "results/smoke/_resume").split():
                break
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)          # a killed session: nothing is carried on the way out
        child.wait()
    assert child.returncode == -signal.SIGKILL, f"killed too late or never reached training:\n{child.stderr.read()}"
    carried = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "results/smoke/_resume").split()
    assert ckpt in carried
    assert not any(f.startswith("results/smoke/_resume/work/squad/sft/seed0/adapter/") for f in carried)

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(clone, "config", "user.email", "t@example.org")
    git(clone, "config", "user.name", "t")
    again = run_repro("run", *cells, "--data-dir", str(data_dir), "--work-dir", str(clone / "runs"),
                      "--results-dir", str(clone / "results"), "--commit")
    assert again.returncode == 0, again.stderr[-3000:]
    log = json.loads((clone / "runs/smoke/squad/sft/seed0/train_log.json").read_text())
    (resume,) = log["checkpoints"]["resumes"]
    assert 1 <= resume["at_step"] < log["total_steps"] == 24
    assert [s["step"] for s in log["steps"]][0] == 1                 # the log before the checkpoint came with it
    ref_log = json.loads((straight / "runs/smoke/squad/sft/seed0/train_log.json").read_text())
    assert [{k: v for k, v in s.items() if k != "elapsed_s"} for s in log["steps"]] == \
        [{k: v for k, v in s.items() if k != "elapsed_s"} for s in ref_log["steps"]]
    cell = "smoke/squad/sft/seed0"
    adapter = "adapter/adapter_model.safetensors"
    assert (clone / "runs" / cell / adapter).read_bytes() == (straight / "runs" / cell / adapter).read_bytes()
    assert (clone / "results" / cell / "items.jsonl.gz").read_bytes() == \
        (straight / "results" / cell / "items.jsonl.gz").read_bytes()
    assert ckpt not in git(clone, "ls-files", "results/smoke/_resume").split()   # dropped once training ended

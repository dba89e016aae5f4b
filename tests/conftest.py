"""Shared fixtures. The data directory is ../shared/data beside the checkout unless S3FT_DATA_DIR says otherwise."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# --- parallel runs (pytest-xdist; pyproject's addopts: -n logical --maxprocesses 4 --dist loadfile) ---------------
# Each test file is one unit of work, so a module's fixtures (tiny models, HF references, a trained adapter) are
# built once. (Two local Ray instances at once are fine: ray.init() without an address picks free ports.)
# The longest files first (measured: pytest --durations on 2 cores), so that no worker starts a long file while the
# others are finishing; the rest keep their collection order. Only the schedule depends on this list.
LONGEST_FIRST = ["test_vllm_cpu.py", "test_driver.py", "test_regression.py", "test_resume.py", "test_train.py",
                 "test_judge_cli.py", "test_general.py", "test_cli.py", "test_grid_ray.py", "test_commit_cells.py",
                 "test_smollm2.py"]


def pytest_configure(config):
    """In an xdist worker, give each worker its share of the cores: torch's spinning threads on oversubscribed
    cores make small-model steps many times slower. Set before torch is imported; children inherit it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers > 1:
        share = str(max(1, (os.cpu_count() or 1) // workers))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "S3FT_THREADS"):
            os.environ.setdefault(var, share)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))    # stable: file order kept within each


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): on a 2-core
    runner shared with other jobs, torch's spinning worker threads make each decoding step of a small model 10-20x
    slower than a single thread does (measured: 5.5 s vs 0.26 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """The tiny model built into a temporary folder (the user's cache is left alone)."""
    from repro.runtime import models

    return models.build_tiny(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = Path(os.environ.get("S3FT_DATA_DIR", REPO.parent / "shared" / "data"))
    if not d.is_dir():
        pytest.fail(f"benchmark data directory {d} not found; set S3FT_DATA_DIR")
    return d


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """A local HF checkpoint of the real SmolLM2-135M-Instruct, fetched and converted by the project's own code."""
    from repro.runtime.models import fetch  # noqa: PLC0415  (heavy import kept out of collection)

    return fetch("smollm2-135m-instruct")


def run_repro(*args: str, cwd: Path = REPO, timeout: float = 900, env: dict | None = None):
    """Run ``python -m repro ...`` in a subprocess (the way users run it) and return the CompletedProcess."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "repro", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory, data_dir) -> Path:
    """A results root holding ``smoke/...``: the smoke preset's whole grid, run once per session by the real
    driver (``python -m repro run --preset smoke``) on the tiny in-process model."""
    root = tmp_path_factory.mktemp("smoke")
    proc = run_repro("run", "--preset", "smoke", "--data-dir", str(data_dir), "--work-dir", str(root / "runs"),
                     "--results-dir", str(root / "results"), "--quiet")
    if proc.returncode != 0:
        pytest.fail(f"smoke grid failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return root / "results"


def procs_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `marker` (sandbox containment checks)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != b"Z":
            found.append(int(pid))
    return found


# Becomes an unprivileged user inside a private mount namespace in which the interpreter is reachable (it may
# live under /root, which other users cannot enter), then runs argv[2:] with the environment in argv[1].
_AS_USER = r"""
import ctypes, json, os, sys, tempfile
from evals.judges import sandbox
uid, env, argv = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
if ctypes.CDLL(None, use_errno=True).unshare(sandbox._CLONE_NEWNS) != 0:
    sys.exit("unshare(CLONE_NEWNS) failed")
sandbox._mount(None, "/", None, sandbox._MS_REC | sandbox._MS_PRIVATE)
hidden, rebind = sandbox._hidden_paths()
sandbox.hide_and_rebind([h for h in hidden if h != "/run"], rebind, tempfile.mkdtemp())
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
os.chdir(env["HOME"])
os.execve(argv[0], argv, env)
"""


def run_as_normal_user(argv: list[str], *, uid: int, env: dict, timeout: float = 300):
    """Run argv as `uid` (no groups, no capabilities): how a normal user runs the suite. Needs root."""
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    return subprocess.run([sys.executable, "-c", _AS_USER, str(uid), json.dumps(env), *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)

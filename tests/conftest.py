"""Shared fixtures. The data directory is ../shared/data beside the checkout unless S3FT_DATA_DIR says otherwise."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = Path(os.environ.get("S3FT_DATA_DIR", REPO.parent / "shared" / "data"))
    if not d.is_dir():
        pytest.fail(f"benchmark data directory {d} not found; set S3FT_DATA_DIR")
    return d


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """A local HF checkpoint of the real SmolLM2-135M-Instruct, fetched and converted by the project's own code."""
    from repro.models import fetch  # noqa: PLC0415  (heavy import kept out of collection)

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

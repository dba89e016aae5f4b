"""Shared pieces of the performance benchmarks: thread settings, provenance, load tracking, JSON output, tables.

Import this module before torch: it sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the caller set it), which has to be in
the environment before the OpenMP runtime starts. On a small machine shared with other jobs, OpenMP's default
spin-waiting makes every thread barrier fight the other processes for the cores; benchmarks/omp_wait.py measures
the effect (it was 5-20x on the 2-core development machine while other test suites ran).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

OMP_WAIT_POLICY_WAS_SET = "OMP_WAIT_POLICY" in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_DATA = os.environ.get("S3FT_DATA_DIR", str(REPO.parent / "shared" / "data"))


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def environment(model: str | None = None) -> dict:
    """Everything a timing depends on besides the code under test: hardware, libraries, commit, load, threads."""
    import torch  # noqa: PLC0415

    from repro.runtime import models, provenance  # noqa: PLC0415

    env = {"date": provenance.now(), **provenance.git_info(), "versions": provenance.versions(),
           "hardware": provenance.hardware(), "torch_threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "omp_wait_policy_set_by": "caller" if OMP_WAIT_POLICY_WAS_SET else "benchmarks/_common.py",
           "argv": sys.argv}
    if model is not None:
        env["model"] = {"name": model, "fingerprint": models.fingerprint(model)}
    return env


class Timer:
    """Wall time of a block plus the 1-minute load average before and after it."""

    def __enter__(self) -> Timer:
        self.load_before = load()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.load_after = load()

    def record(self) -> dict:
        return {"seconds": round(self.seconds, 3), "load_before": self.load_before, "load_after": self.load_after}


def interleaved(arms: dict[str, Callable[[int], Any]], reps: int, *, alternate: bool = True) -> list[tuple[str, int, Any]]:
    """Run every arm `reps` times, interleaved A,B,A,B (reversed on odd repetitions when `alternate`, so neither
    arm always runs right after the other); returns (arm, rep, result) in execution order."""
    out = []
    names = list(arms)
    for rep in range(reps):
        order = names if not alternate or rep % 2 == 0 else names[::-1]
        for name in order:
            out.append((name, rep, arms[name](rep)))
    return out


def median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def write_result(name: str, doc: dict, out: str | Path | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)
    return path


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    from tabulate import tabulate  # noqa: PLC0415

    return tabulate(rows, headers=headers, floatfmt=".3g")


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def parse_limits(items: Sequence[str], defaults: dict[str, int]) -> dict[str, int]:
    """``--limits NAME=N ...`` over ``defaults`` (whose keys are the benchmarks a script knows)."""
    limits = dict(defaults)
    for item in items:
        name, _, n = item.partition("=")
        if name not in defaults or not n.isdigit():
            raise SystemExit(f"--limits: expected NAME=N with NAME in {tuple(defaults)}, got {item!r}")
        limits[name] = int(n)
    return limits

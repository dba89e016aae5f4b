"""A stage that is killed midway (SIGKILL, as a session limit or the OOM killer does it), for tests/test_resume.py.

    python tests/helpers/killed_stage.py train SPEC.json     # training; SIGKILL when step `kill_at_step` ends
    python tests/helpers/killed_stage.py score SPEC.json     # benchmark scoring; SIGKILL after `kill_after_chunks`
                                                             # journal records are on disk

SPEC: train {"model", "records", "config", "out", "kill_at_step"}; score {"model", "data_dir", "specs", "journal",
"chunk", "kill_after_chunks", "kwargs"}. One torch thread, as in the tests (the same kernels, so the same bits).
"""
from __future__ import annotations

import json
import os
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def train(spec: dict) -> None:
    from methods.train import TrainConfig
    from methods.train import train as train_core

    def on_step(record: dict) -> None:
        if record["step"] == spec["kill_at_step"]:
            _die()

    train_core(spec["model"], spec["records"], TrainConfig.from_dict(spec["config"]), spec["out"], progress=False,
               on_step=on_step)
    raise SystemExit("training finished: it was meant to be killed midway")


def score(spec: dict) -> None:
    import evals.lm_backend as backend
    from evals.benchmarks import BenchmarkSpec, evaluate_benchmarks
    from repro.runtime import models
    from repro.runtime.cache import GenerationCache

    backend.JOURNAL_CHUNK_REQUESTS = spec["chunk"]
    put_many, written = GenerationCache.put_many, []

    def put_then_maybe_die(self, shard, records):
        put_many(self, shard, records)
        written.append(shard)
        if len(written) == spec["kill_after_chunks"]:
            _die()

    GenerationCache.put_many = put_then_maybe_die
    model, tok = models.load(spec["model"], device="cpu")
    evaluate_benchmarks(model, tok, [BenchmarkSpec(**s) for s in spec["specs"]], data_dir=spec["data_dir"],
                        journal=spec["journal"], **spec["kwargs"])
    raise SystemExit("scoring finished: it was meant to be killed midway")


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    mode, path = sys.argv[1:3]
    with open(path, encoding="utf-8") as f:
        {"train": train, "score": score}[mode](json.load(f))

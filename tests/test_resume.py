"""A stage killed midway resumes from what it had finished, and the resumed result equals an uninterrupted one.

Training (methods/train.py) writes a checkpoint at most `checkpoint_minutes` apart; benchmark scoring
(evals/lm_backend.py) journals each chunk of answers as it completes. Here the stage runs in a child process that
SIGKILLs itself midway (tests/helpers/killed_stage.py), is started again in this process, and its result is
compared with the same stage never stopped: bit for bit. Bitwise is the right bar, not a tolerance: a resumed run
computes the same float operations on the same values (trained weights, AdamW moments, LR schedule and the RNG
state that draws the dropout masks are restored exactly; a journalled chunk is packed the same way either way),
and one torch thread in both processes keeps the kernels' reduction order fixed. A tolerance would hide a state
that is restored slightly wrong (an RNG state off by one draw changes dropout masks and the loss of every later
step by far more than rounding, so it could not hide behind one).

The tiny model shows the mechanics in seconds; SmolLM2-135M-Instruct (the real model) shows them at scale.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from methods.train import CHECKPOINT, TrainConfig, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = "smollm2-135m-instruct"
EVERY_STEP = 1e-9       # checkpoint_minutes: a checkpoint after every step


def records_of(task_name: str, data_dir: Path, n: int, seed: int = 5) -> list[dict]:
    from evals.tasks import get_task

    task = get_task(task_name)
    exs = task.load("train", data_dir, limit=n, seed=seed)
    return [{"id": e["id"], "prompt": task.train_messages(e), "target": task.gold_response(e)} for e in exs]


def run_killed(mode: str, spec: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"{mode}_spec.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "helpers" / "killed_stage.py"), mode, str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                               "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == -9, f"the child was meant to be SIGKILLed midway:\n{proc.stderr[-3000:]}"
    return proc


def adapter_bytes(folder: Path) -> bytes:
    return (folder / "adapter" / "adapter_model.safetensors").read_bytes()


def deterministic(log: dict) -> list[dict]:
    """A log's per-step records without their clock readings."""
    return [{k: v for k, v in s.items() if k != "elapsed_s"} for s in log["steps"]]


def check_training_resumes(model: str, records: list[dict], cfg: TrainConfig, kill_at_step: int, tmp_path: Path):
    straight = train(model, records, cfg, tmp_path / "straight", progress=False)
    assert straight["checkpoints"]["resumes"] == [] and not (tmp_path / "straight" / CHECKPOINT).exists()

    run_killed("train", {"model": model, "records": records, "config": cfg.to_dict(),
                         "out": str(tmp_path / "resumed"), "kill_at_step": kill_at_step}, tmp_path)
    # killed as step `kill_at_step` ended, before that step's checkpoint: the last one holds the steps before it
    ckpt = tmp_path / "resumed" / CHECKPOINT
    assert ckpt.is_file() and not (tmp_path / "resumed" / "adapter").exists()

    steps_seen = []
    resumed = train(model, records, cfg, tmp_path / "resumed", progress=False,
                    on_step=lambda r: steps_seen.append(r["step"]))
    assert resumed["checkpoints"]["resumes"][0]["at_step"] == kill_at_step - 1
    assert steps_seen == list(range(kill_at_step, straight["total_steps"] + 1)), "only unfinished steps are redone"
    assert deterministic(resumed) == deterministic(straight)
    assert resumed["final_loss"] == straight["final_loss"]
    assert adapter_bytes(tmp_path / "resumed") == adapter_bytes(tmp_path / "straight")
    assert not ckpt.exists(), "a finished run leaves no checkpoint behind"
    return straight, resumed


# --- tiny model: the mechanics ------------------------------------------------------------------------------------
def test_tiny_training_killed_midway_resumes_to_the_same_adapter(data_dir, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=3, learning_rate=1e-3, lora_dropout=0.1, max_length=4096,
                      checkpoint_minutes=EVERY_STEP, seed=3)
    straight, _ = check_training_resumes("tiny", records_of("squad", data_dir, 9), cfg, kill_at_step=4,
                                         tmp_path=tmp_path)
    assert straight["total_steps"] == 6


def test_a_checkpoint_of_another_run_is_not_resumed(data_dir, tmp_path):
    recs = records_of("squad", data_dir, 6)
    cfg = TrainConfig(epochs=1, batch_size=2, learning_rate=1e-3, max_length=4096, checkpoint_minutes=EVERY_STEP)
    run_killed("train", {"model": "tiny", "records": recs, "config": cfg.to_dict(), "out": str(tmp_path / "a"),
                         "kill_at_step": 2}, tmp_path)
    other = TrainConfig(**{**cfg.to_dict(), "learning_rate": 2e-3})
    assert load_checkpoint(tmp_path / "a" / CHECKPOINT, "not this run") is None
    log = train("tiny", recs, other, tmp_path / "a", progress=False)
    assert log["checkpoints"]["resumes"] == [] and len(log["steps"]) == 3
    fresh = train("tiny", recs, other, tmp_path / "b", progress=False)
    assert deterministic(log) == deterministic(fresh)


def test_checkpoint_interval_and_precision_default_leave_the_train_hash_alone():
    """checkpoint_minutes changes no number (never hashed); precision is hashed only when set away from "auto", so
    the hashes of every committed cell stay valid."""
    base = TrainConfig()
    assert TrainConfig(checkpoint_minutes=1).hashed() == base.hashed()
    assert TrainConfig(precision="auto").hashed() == base.hashed()
    assert "precision" not in base.hashed() and "checkpoint_minutes" not in base.hashed()
    assert TrainConfig(precision="bf16-autocast").hashed()["precision"] == "bf16-autocast"
    assert base.resolved_precision(use_cuda=False) == "fp32" and base.resolved_precision(use_cuda=True) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="LoRA only"):
        TrainConfig(precision="bf16", finetune="full")


def test_tiny_scoring_killed_midway_resumes_to_the_same_answers(data_dir, tmp_path):
    check_scoring_resumes("tiny", data_dir, [{"name": "arc_easy", "limit": 5}, {"name": "hellaswag", "limit": 3}],
                          chunk=4, kill_after_chunks=2, tmp_path=tmp_path, compare_whole=False)


# --- SmolLM2: the real model --------------------------------------------------------------------------------------
@pytest.mark.usefixtures("smollm2_dir")
def test_smollm2_training_killed_midway_resumes_to_the_same_adapter_and_loss_log(data_dir, tmp_path):
    """4 optimiser steps of LoRA on real GSM8K gold answers (8 examples, batch 2, dropout on), killed as step 3
    ends; resumed from the step-2 checkpoint. Same adapter bytes and the same loss, LR and grad norm at every step."""
    cfg = TrainConfig(epochs=1, batch_size=2, learning_rate=1e-3, lora_dropout=0.1, max_length=512,
                      max_tokens_per_micro_batch=512, checkpoint_minutes=EVERY_STEP, seed=0)
    straight, _ = check_training_resumes(SMOLLM2, records_of("gsm8k", data_dir, 8), cfg, kill_at_step=3,
                                         tmp_path=tmp_path)
    assert straight["total_steps"] == 4 and straight["precision"] == "fp32"


@pytest.mark.usefixtures("smollm2_dir")
def test_smollm2_scoring_killed_midway_resumes_to_the_same_answers(data_dir, tmp_path):
    check_scoring_resumes(SMOLLM2, data_dir, [{"name": "arc_easy", "limit": 6}, {"name": "hellaswag", "limit": 4},
                                              {"name": "winogrande", "limit": 4}],
                          chunk=8, kill_after_chunks=3, tmp_path=tmp_path)


def check_scoring_resumes(model_name: str, data_dir: Path, specs: list[dict], *, chunk: int, kill_after_chunks: int,
                          tmp_path: Path, compare_whole: bool = True) -> None:
    import numpy as np

    import evals.lm_backend as backend
    from evals.benchmarks import BenchmarkSpec, evaluate_benchmarks
    from repro.runtime import models
    from repro.runtime.store import read_jsonl

    kwargs = {"seed": 7, "max_length": 512, "return_loglikelihoods": True}
    model, tok = models.load(model_name, device="cpu")
    bench_specs = [BenchmarkSpec(**s) for s in specs]

    def evaluate(journal: Path | None) -> dict:
        old = backend.JOURNAL_CHUNK_REQUESTS
        backend.JOURNAL_CHUNK_REQUESTS = chunk
        try:
            return evaluate_benchmarks(model, tok, bench_specs, data_dir=data_dir, journal=journal, **kwargs)
        finally:
            backend.JOURNAL_CHUNK_REQUESTS = old

    straight = evaluate(tmp_path / "straight.jsonl")
    n_chunks = len(read_jsonl(tmp_path / "straight.jsonl"))
    assert n_chunks > kill_after_chunks, "the kill must come midway"

    journal = tmp_path / "resumed.jsonl"
    run_killed("score", {"model": model_name, "data_dir": str(data_dir), "specs": specs, "journal": str(journal),
                         "chunk": chunk, "kill_after_chunks": kill_after_chunks, "kwargs": kwargs}, tmp_path)
    assert len(read_jsonl(journal)) == kill_after_chunks
    resumed = evaluate(journal)
    # every chunk scored once in all: the killed run's chunks were reused, not scored again
    assert len(read_jsonl(journal)) == n_chunks
    for key in ("samples", "results", "n-samples", "configs"):
        assert resumed[key] == straight[key], key

    if not compare_whole:
        return
    # Chunked packing vs packing a whole call at once: the same requests, rows cut elsewhere -> float rounding only
    # (fp32; log-likelihoods of tens of nats, so a relative bound).
    whole = evaluate(None)
    for name in straight["samples"]:
        for a, b in zip(straight["samples"][name], whole["samples"][name]):
            np.testing.assert_allclose(a["loglikelihoods"], b["loglikelihoods"], rtol=1e-5)

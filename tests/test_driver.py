"""The grid driver: the smoke preset end to end, resuming after SIGKILL, the Ray executor, the plan."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_repro

from repro.driver.schema import find_results, validate_result

SMOKE_CELLS = {(t, m) for t in ("gsm8k", "mbpp", "squad") for m in ("base", "sft", "sdft", "s3ft", "ssr", "self_only")}
# A smaller plan for the runs this module makes itself: enough to cover targets, training and evaluation.
PLAN = ["--tasks", "squad", "--methods", "base", "sft", "s3ft"]
VOLATILE = {"seconds", "wall_time_s", "elapsed_s", "trained_tokens_per_s", "seen_tokens_per_s", "date",
            "total_evaluation_time_seconds", "generation_stats", "reused_from_earlier_seed", "provenance"}


def normalized(result: dict) -> dict:
    """A result without what legitimately differs between two runs of the same cell (timings, dates, cache hits)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in VOLATILE}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    out = strip(result)
    out["model_fingerprint"] = result["provenance"]["model"]["fingerprint"]
    return out


# README "Reproducibility": the same process at the same thread count is bit-exact; another process, CPU or
# thread count (a Ray worker) agrees within this tolerance on floats, exactly on everything else (texts,
# verdicts, counts, ids, configuration hashes).
FLOAT_TOL = {"rel": 1e-3, "abs": 1e-6}
FLOAT_DIGESTS = {"adapter_sha256", "sha256"}   # digests of float data (adapter weights, the items file)


def assert_close(a, b, where: str = "") -> None:
    """a == b, floats within FLOAT_TOL; digests of float data are not compared."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            if k not in FLOAT_DIGESTS:
                assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, bool) or isinstance(b, bool):
        assert type(a) is type(b) and a == b, f"{where}: {a!r} vs {b!r}"
    elif isinstance(a, float) or isinstance(b, float):
        assert b == pytest.approx(a, **FLOAT_TOL), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def items(path: Path) -> list[dict]:
    with gzip.open(path.with_name("items.jsonl.gz"), "rt") as f:
        return [json.loads(line) for line in f]


def load_grid(results: Path) -> dict[str, dict]:
    return {str(p.relative_to(results)): json.loads(p.read_text()) for p in find_results(results)}


def test_smoke_grid_is_complete_and_valid(smoke_results):
    paths = find_results(smoke_results / "smoke")
    cells = {(p.parts[-4], p.parts[-3]) for p in paths}
    assert cells == SMOKE_CELLS
    for p in paths:
        assert validate_result(p) == [], p
        doc = json.loads(p.read_text())
        assert set(doc["cross_task"]) == {"gsm8k", "mbpp", "squad"}
        if doc["cell"]["method"] != "base":
            assert doc["targets"]["n_examples"] == 6
            if doc["training"].get("skipped"):    # self_only with a judge that accepts nothing: the base model
                assert doc["cell"]["method"] == "self_only" and doc["drops"] is None
            else:
                assert doc["drops"]["average_drop"] is not None
    s3ft = json.loads((smoke_results / "smoke/squad/s3ft/seed0/result.json").read_text())
    with gzip.open(smoke_results / "smoke/squad/s3ft/seed0/items.jsonl.gz", "rt") as f:
        kinds = {json.loads(line)["kind"] for line in f}
    assert kinds == {"task", "benchmark", "candidates"}
    assert s3ft["training"]["steps"] and s3ft["forgetting_signal"]["n_prompts"] == 4


def test_dry_run_reports_every_cell_done(smoke_results, data_dir):
    proc = run_repro("run", "--preset", "smoke", "--dry-run", "--data-dir", str(data_dir),
                     "--work-dir", str(smoke_results.parent / "runs"), "--results-dir", str(smoke_results))
    assert proc.returncode == 0, proc.stderr
    assert "18 cells: 18 done, 0 trained, 0 targets, 0 todo" in proc.stdout


def test_a_run_never_replaces_another_configurations_result_unasked(smoke_results, data_dir, tmp_path):
    """An override that changes the cells' hash (here the LoRA rank) would retrain and overwrite the committed
    results of the preset's own configuration: the run stops first and names the file; --overwrite replaces it."""
    results = tmp_path / "results"
    shutil.copytree(smoke_results, results)
    sft = results / "smoke/squad/sft/seed0/result.json"
    before = sft.read_bytes()
    args = ["run", "--preset", "smoke", "--tasks", "squad", "--methods", "sft", "--seeds", "0", "--data-dir",
            str(data_dir), "--work-dir", str(tmp_path / "runs"), "--results-dir", str(results), "--quiet",
            "train.lora_r=4"]
    dry = run_repro(*args, "--dry-run")
    assert dry.returncode == 0 and f"{sft} holds a result of another configuration" in dry.stdout, dry.stdout
    refused = run_repro(*args)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.startswith(f"error: {sft} holds a result of another configuration (config_hash ")
    assert "--overwrite" in refused.stderr and sft.read_bytes() == before
    assert not [*(tmp_path / "runs").rglob("run.log"), *(tmp_path / "runs").rglob("adapter")]  # before any work
    replaced = run_repro(*args, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert json.loads(sft.read_text())["training"]["config"]["lora_r"] == 4


def _run_args(root: Path, data_dir: Path, *extra: str) -> list[str]:
    return ["run", "--preset", "smoke", *PLAN, "--data-dir", str(data_dir), "--work-dir", str(root / "runs"),
            "--results-dir", str(root / "results"), "--quiet", *extra]


def _run_until(root: Path, data_dir: Path, stop_when) -> bool:
    """Start the grid, SIGKILL its whole process group as soon as progress.json satisfies `stop_when`.
    Returns True if it was killed (False if it finished first)."""
    proc = subprocess.Popen([sys.executable, "-m", "repro", *_run_args(root, data_dir)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    status = root / "runs" / "smoke" / "progress.json"
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        try:
            if stop_when(json.loads(status.read_text())):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
        except (OSError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    proc.wait()
    return False


def _assert_nothing_half_written(root: Path) -> None:
    for p in list(root.rglob("*.json")):
        json.loads(p.read_text())                    # every JSON file the run left parses
    for p in root.rglob("result.json"):
        assert validate_result(p) == [], p


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("clean")
    proc = run_repro(*_run_args(root, data_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path, data_dir):
    # Kill once while a model trains, once while a tuned model is evaluated, then let it finish.
    killed_in_train = _run_until(tmp_path, data_dir, lambda s: "train" in s["running"].values())
    _assert_nothing_half_written(tmp_path)
    killed_in_eval = _run_until(tmp_path, data_dir, lambda s: any(
        stage == "evaluate" and "/base/" not in label for label, stage in s["running"].items()))
    _assert_nothing_half_written(tmp_path)
    assert killed_in_train and killed_in_eval, "the run finished before it could be killed"
    proc = run_repro(*_run_args(tmp_path, data_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(tmp_path.rglob(".*.tmp")), "temporary files were left behind"

    clean, resumed = load_grid(uninterrupted / "results"), load_grid(tmp_path / "results")
    assert sorted(clean) == sorted(resumed) and len(clean) == 3
    # timing.json keeps the stages the killed runs finished (the cell journal), each once
    timings = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("timing.json")]
    assert len(timings) == 3 and all(t["stages"][-1]["stage"] == "write" for t in timings)
    assert any(len({s["pid"] for s in t["stages"]}) > 1 for t in timings)
    assert all([s["stage"] for s in t["stages"]].count("train") == 1 for t in timings if "/base/" not in t["cell"])
    for key in clean:
        assert normalized(resumed[key]) == normalized(clean[key]), key
        items = [(r / "results" / key).with_name("items.jsonl.gz").read_bytes()
                 for r in (uninterrupted, tmp_path)]
        assert items[0] == items[1], key


def test_ray_executor_runs_cells_as_ray_tasks(uninterrupted, tmp_path, data_dir):
    pytest.importorskip("ray")
    proc = run_repro(*_run_args(tmp_path, data_dir, "--executor", "ray", "--ray-num-cpus", "2"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean, via_ray = load_grid(uninterrupted / "results"), load_grid(tmp_path / "results")
    assert sorted(clean) == sorted(via_ray) and len(clean) == 3
    # Another process with its own thread pool: equal within the documented tolerance, not bit for bit.
    for key in clean:
        assert_close(normalized(clean[key]), normalized(via_ray[key]), key)
        assert_close(items(uninterrupted / "results" / key), items(tmp_path / "results" / key), f"{key} items")


def test_tolerance_check_is_not_vacuous():
    assert_close({"kl": 2.53379e-05, "text": "a"}, {"kl": 2.53424e-05, "text": "a"})   # the Intel/AMD case
    with pytest.raises(AssertionError):
        assert_close({"kl": 0.25}, {"kl": 0.26})
    with pytest.raises(AssertionError):
        assert_close({"text": "a"}, {"text": "b"})
    with pytest.raises(AssertionError):
        assert_close({"correct": True}, {"correct": 1.0})


def test_a_budget_control_trains_for_its_reference_methods_tokens(tmp_path, data_dir):
    """sft_matched (issue 17): gold targets, trained for as many tokens as s3ft's targets hold - here made three
    times longer than gold, so the control must run past its one epoch - recorded in its training log."""
    from methods.train import encode_records  # noqa: PLC0415
    from methods.train_config import load_records  # noqa: PLC0415
    from repro.driver.cell import Cell, CellRunner  # noqa: PLC0415
    from repro.driver.recipes import load_recipe  # noqa: PLC0415
    from repro.runtime import models  # noqa: PLC0415
    from repro.runtime.store import jsonl_bytes  # noqa: PLC0415

    recipe = load_recipe("smoke", ["methods=[base, sft, s3ft, sft_matched]", "evaluation.benchmarks={}",
                                   "evaluation.headline_benchmarks=[]", "evaluation.cross_task=false",
                                   "tasks={squad: {train: 6, test: 2, max_new_tokens: 8, paraphrase_max_new_tokens: 8,"
                                   " judge: match}}"])
    runner = CellRunner(recipe, data_dir=data_dir, work_root=tmp_path / "runs", results_root=tmp_path / "results",
                        progress=False)
    s3ft, matched = Cell("smoke", "squad", "s3ft", 0), Cell("smoke", "squad", "sft_matched", 0)
    runner.build_targets(s3ft)
    path = runner.paths(s3ft)["targets"] / "targets.jsonl"
    longer = [{**r, "target": " ".join([r["target"]] * 3)} for r in load_records(path)]
    path.write_bytes(jsonl_bytes(longer))          # the summary's hash still matches: these targets are reused

    runner.build_targets(matched)
    log, adapter = runner.train(matched)
    cfg = runner.train_config(matched)
    tok = models.load_tokenizer("tiny")
    budget = encode_records(tok, longer, cfg.max_length)[1]["trained_tokens_per_epoch"]
    own = encode_records(tok, load_records(runner.paths(matched)["targets"] / "targets.jsonl"), cfg.max_length)[1]
    assert budget > 2 * own["trained_tokens_per_epoch"]
    assert log["data"]["token_budget"] == {"trained_tokens": budget, "of_examples": 6, "epochs": 1, "method": "s3ft"}
    assert log["trained_tokens"] >= budget > log["trained_tokens"] - log["steps"][-1]["trained_tokens"]
    assert log["total_steps"] == len(log["steps"]) > 2 and log["steps"][-1]["epoch"] >= 2
    assert adapter is not None and runner.state(matched) == "trained"


def test_a_cells_progress_line_follows_generation_batches_and_benchmark_chunks(tmp_path, data_dir):
    """Long stages report inside themselves (a 1.5B model's 500-item evaluation decodes for ~25 min): each
    generation batch as prompts done of the call's total, each benchmark as it starts and after each journalled
    chunk; only while `run` computes a cell."""
    from repro.driver.cell import Cell, CellRunner  # noqa: PLC0415
    from repro.driver.recipes import load_recipe  # noqa: PLC0415

    recipe = load_recipe("smoke", ["methods=[base]", "generation.batch_size=2", "evaluation.cross_task=false",
                                   "evaluation.benchmarks={winogrande: {limit: 4}, hellaswag: {limit: 2}}",
                                   "evaluation.headline_benchmarks=[hellaswag]",
                                   "tasks={squad: {train: 2, test: 5, max_new_tokens: 4, judge: match}}"])
    runner = CellRunner(recipe, data_dir=data_dir, work_root=tmp_path / "runs", results_root=tmp_path / "results",
                        progress=False)
    seen: list[tuple[Cell, str]] = []
    runner.on_progress = lambda cell, text: seen.append((cell, text))
    cell = Cell("smoke", "squad", "base", 0)
    runner.run(cell)
    assert {c for c, _ in seen} == {cell}
    lines = [t for _, t in seen]
    gen = [t for t in lines if t.startswith("generated")]
    assert gen == ["generated 2/5", "generated 4/5", "generated 5/5"]       # batches of 2, each reported once
    bench = [t for t in lines if not t.startswith("generated")]
    assert bench[0] == "winogrande 1/2" and "hellaswag 2/2" in bench
    assert any(t.startswith("winogrande 1/2, chunk 1/") for t in bench)
    assert bench[-1].startswith("hellaswag 2/2, chunk ") and bench[-1].split("chunk ")[1].split("/")[0] == \
        bench[-1].split("/")[-1]                                           # the last chunk is n/n
    seen.clear()
    gen, task = runner.base_generator(), runner.task("squad")
    gen.generate([[{"role": "user", "content": "hi"}]], runner.decoding("squad", "predict"), tag="outside",
                 progress=False)
    assert seen == []                                                       # no cell running: nothing reported
    # a call whose answers are partly cached (a resumed stage) counts them: the 5 evaluated prompts + 2 new ones
    calls: list[tuple[int, int]] = []
    gen.on_batch = lambda done, total: calls.append((done, total))
    prompts = [task.predict_messages(ex) for ex in runner.examples("squad", "test")]
    prompts += [[{"role": "user", "content": f"Question {i}?"}] for i in (1, 2)]
    gen.generate(prompts, runner.decoding("squad", "predict"), tag=task.predict_tag, progress=False)
    assert calls[-1] == (7, 7) and calls[0][0] >= 6 and all(n == 7 for _, n in calls)

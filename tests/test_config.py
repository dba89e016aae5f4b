"""Resolved configuration (repro.driver.config): every stage hash is taken over resolved values, so changing a task
or code default makes exactly the stages it affects stale - and only those."""
from __future__ import annotations

import dataclasses

import pytest

from evals import benchmarks
from evals.judges import llm as llm_judge
from evals.tasks.gsm8k import GSM8K
from evals.tasks.squad import SQuAD
from methods.train_config import TrainConfig
from repro.driver import config as config_mod
from repro.driver.cell import Cell, CellRunner
from repro.driver.config import resolve
from repro.driver.recipes import Recipe
from repro.runtime.store import atomic_write_json

BASE_IDENTITY = {"model": "tiny", "fingerprint": "f" * 12, "adapter": None}   # a scored model's identity


def recipe(cross_task=True, **task_overrides) -> Recipe:
    """A recipe that leaves the token caps, training knobs and evaluation counts to their defaults."""
    tasks = {"gsm8k": {"train": 4, "test": 4}, "squad": {"train": 4, "test": 4}, "mbpp": {"train": 4, "test": 4}}
    for key, value in task_overrides.items():
        task, _, field = key.partition("__")
        tasks[task][field] = value
    return Recipe(name="cfg", model="tiny", tasks=tasks, methods=["base", "sft", "s3ft"], seeds=[0],
                  train={"epochs": 1}, evaluation={"cross_task": cross_task, "benchmarks": {"hellaswag": {"limit": 4}},
                                                   "headline_benchmarks": ["hellaswag"]})


def hashes(r: Recipe) -> dict:
    """Every stage hash of the grid: per (task, method) targets/train/cell, per task in-domain, the benchmarks."""
    c = resolve(r)
    out: dict = {"benchmarks": c.benchmark_hash(), "benchmark_cache_base": c.benchmark_cache_key(BASE_IDENTITY)}
    for t in c.tasks:
        out[("in_domain", t)] = c.in_domain_hash(t)
        out[("cell", t, "base")] = c.cell_hash(t, "base", 0)
        for m in ("sft", "s3ft"):
            out[("targets", t, m)] = c.targets_hash(t, m)
            out[("train", t, m)] = c.train_hash(t, m, 0)
            out[("cell", t, m)] = c.cell_hash(t, m, 0)
    return out


def changed(before: dict, after: dict) -> set:
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


def test_a_task_default_makes_its_stages_stale_and_only_those(monkeypatch):
    before_iso, before_cross = hashes(recipe(cross_task=False)), hashes(recipe())
    monkeypatch.setattr(GSM8K, "max_new_tokens", 512)      # a code default, not set by the recipe
    assert resolve(recipe()).tasks["gsm8k"].predict.max_new_tokens == 512
    after_iso, after_cross = hashes(recipe(cross_task=False)), hashes(recipe())

    gsm8k_stages = {("targets", "gsm8k", "sft"), ("targets", "gsm8k", "s3ft"), ("train", "gsm8k", "sft"),
                    ("train", "gsm8k", "s3ft"), ("in_domain", "gsm8k"), ("cell", "gsm8k", "base"),
                    ("cell", "gsm8k", "sft"), ("cell", "gsm8k", "s3ft")}
    # Without cross-task evaluation nothing of squad or mbpp, and no benchmark score (base's included), changes.
    assert changed(before_iso, after_iso) == gsm8k_stages
    # With it, every cell evaluates gsm8k too: their cells change, their targets and adapters do not.
    assert changed(before_cross, after_cross) == gsm8k_stages | {("cell", t, m) for t in ("squad", "mbpp")
                                                                 for m in ("base", "sft", "s3ft")}


def test_hashes_see_resolved_values_not_the_recipes_text(monkeypatch):
    default = hashes(recipe())
    assert hashes(recipe(gsm8k__max_new_tokens=GSM8K.max_new_tokens)) == default   # spelled out = the default
    assert hashes(recipe(gsm8k__max_new_tokens=None)) == default                   # null = the task's default
    pinned = hashes(recipe(gsm8k__max_new_tokens=320))
    monkeypatch.setattr(GSM8K, "max_new_tokens", 512)
    assert hashes(recipe(gsm8k__max_new_tokens=320)) == pinned      # a recipe that pins the value is unaffected
    assert hashes(recipe()) != default


def test_paraphrase_cap_changes_targets_not_evaluation(monkeypatch):
    before = hashes(recipe(cross_task=False))
    monkeypatch.setattr(SQuAD, "paraphrase_max_new_tokens", 200)
    after = hashes(recipe(cross_task=False))
    # The paraphrase prompt builds targets only: base cells and in-domain evaluation stay.
    assert changed(before, after) == {(stage, "squad", m) for stage in ("targets", "train", "cell")
                                      for m in ("sft", "s3ft")}


def test_a_training_default_changes_train_and_cell_not_targets(monkeypatch):
    @dataclasses.dataclass
    class Warmer(TrainConfig):
        warmup_ratio: float = 0.1          # TrainConfig's default is 0.03; the recipe does not set it

    before = hashes(recipe())
    monkeypatch.setattr(config_mod, "TrainConfig", Warmer)
    assert resolve(recipe()).train_config(3).warmup_ratio == 0.1
    after = hashes(recipe())
    assert changed(before, after) == {(stage, t, m) for stage in ("train", "cell") for t in ("gsm8k", "squad", "mbpp")
                                      for m in ("sft", "s3ft")}


def test_an_evaluation_setting_changes_cells_only():
    default = hashes(recipe())
    r = recipe()
    r.evaluation["forgetting_prompts"] = config_mod.EvaluationConfig().forgetting_prompts
    assert hashes(r) == default                  # spelled out = the default
    r.evaluation["forgetting_prompts"] = 5
    # Only trained cells measure forgetting: base cells, targets, adapters and benchmark scores stay.
    assert changed(default, hashes(r)) == {("cell", t, m) for t in ("gsm8k", "squad", "mbpp") for m in ("sft", "s3ft")}


def test_a_benchmark_registry_default_changes_benchmark_scores_and_cells(monkeypatch):
    before = hashes(recipe())
    entry = dataclasses.replace(benchmarks.BENCHMARKS["hellaswag"], primary_metric="acc,none")
    monkeypatch.setitem(benchmarks.BENCHMARKS, "hellaswag", entry)
    after = hashes(recipe())
    assert changed(before, after) == {"benchmarks", "benchmark_cache_base"} | {
        ("cell", t, m) for t in ("gsm8k", "squad", "mbpp") for m in ("base", "sft", "s3ft")}


def test_the_llm_judges_token_cap_is_part_of_the_tasks_identity(monkeypatch):
    before = hashes(recipe(squad__judge="llm"))
    assert resolve(recipe(squad__judge="llm")).tasks["squad"].judge_model == "tiny"   # the base model judges
    monkeypatch.setattr(llm_judge, "MAX_NEW_TOKENS", 64)
    after = hashes(recipe(squad__judge="llm"))
    assert ("targets", "squad", "s3ft") in changed(before, after) and ("in_domain", "squad") in changed(before, after)
    assert not {k for k in changed(before, after) if isinstance(k, tuple) and k[0] != "cell" and k[1] != "squad"}
    # A deterministic judge has no token cap: its hashes ignore the LLM judge's settings.
    assert hashes(recipe()) == hashes(recipe(squad__judge="match"))


def test_a_budget_control_is_stale_when_its_reference_targets_are(monkeypatch):
    """sft_matched trains for s3ft's trained tokens: s3ft's targets are upstream of its adapter (and of nothing
    else's: sft's hashes, and every hash of a recipe without a control, are unchanged by the control existing)."""
    r = recipe()
    r.methods.append("sft_matched")
    before = resolve(r)
    assert before.budget_reference("sft_matched") == "s3ft" and before.budget_reference("sft") is None
    assert before.train_hash("squad", "sft_matched", 0) != before.train_hash("squad", "sft", 0)
    assert hashes(r) == hashes(recipe())
    old = {s: f("squad", m, *a) for s, f, m, a in (
        ("train_sft", before.train_hash, "sft", (0,)), ("targets_matched", before.targets_hash, "sft_matched", ()),
        ("train_matched", before.train_hash, "sft_matched", (0,)), ("cell_matched", before.cell_hash, "sft_matched", (0,)))}
    real = config_mod.ResolvedConfig.targets_hash
    # a change only S3FT's targets see (as a change to its selection rule would be)
    monkeypatch.setattr(config_mod.ResolvedConfig, "targets_hash",
                        lambda self, task, method: real(self, task, method) + ("x" if method == "s3ft" else ""))
    after = resolve(r)
    assert after.train_hash("squad", "sft", 0) == old["train_sft"]
    assert after.targets_hash("squad", "sft_matched") == old["targets_matched"]
    assert after.train_hash("squad", "sft_matched", 0) != old["train_matched"]
    assert after.cell_hash("squad", "sft_matched", 0) != old["cell_matched"]


@pytest.fixture
def runner_for(tmp_path):
    def make(r: Recipe) -> CellRunner:
        return CellRunner(r, data_dir=None, work_root=tmp_path / "runs", results_root=tmp_path / "results",
                          progress=False)
    return make


def test_the_runner_reads_resolved_values_and_sees_stale_artefacts(runner_for, monkeypatch):
    runner = runner_for(recipe(cross_task=False))
    gsm8k, squad = Cell("cfg", "gsm8k", "s3ft", 0), Cell("cfg", "squad", "s3ft", 0)
    assert runner.decoding("gsm8k", "predict") == runner.config.tasks["gsm8k"].predict
    assert runner.decoding("gsm8k", "predict").max_new_tokens == GSM8K.max_new_tokens
    assert runner.train_config(gsm8k).to_dict() == {**TrainConfig(epochs=1).to_dict(), "seed": 0}
    for cell in (gsm8k, squad):                         # what a finished build + training leaves behind
        p = runner.paths(cell)
        atomic_write_json(p["targets"] / "targets_summary.json", {"config_hash": runner.targets_hash(cell)})
        atomic_write_json(p["train"] / "train_log.json", {"config_hash": runner.train_hash(cell)})
    assert runner.state(gsm8k) == runner.state(squad) == "trained"

    monkeypatch.setattr(GSM8K, "max_new_tokens", 512)
    rerun = runner_for(recipe(cross_task=False))
    assert rerun.decoding("gsm8k", "predict").max_new_tokens == 512
    assert rerun.state(gsm8k) == "todo"                 # old targets and adapter are not reused
    assert rerun.state(squad) == "trained"              # another task's are

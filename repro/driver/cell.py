"""One cell of a grid, (preset, task, method, seed): build targets -> train -> evaluate -> write the result.

Each stage leaves an artefact whose presence (with a matching config hash) marks it done, written atomically, so a
run killed at any moment redoes only unfinished stages; generation and judging inside a stage resume from the cache.

Work folders (not committed):
  <work>/<preset>/<task>/<method>/targets/       targets.jsonl, candidates.jsonl, targets_summary.json (all seeds)
  <work>/<preset>/<task>/<method>/seed<k>/       adapter/, train_log.json
  <work>/cache/generations/, <work>/cache/benchmarks/
Results (committed): <results>/<preset>/<task>/<method>/seed<k>/result.json + items.jsonl.gz
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.benchmarks import evaluate_benchmarks
from evals.data import seeded_subset
from evals.forgetting import forgetting_signal, kl_on_texts
from evals.indomain import evaluate_task
from evals.judges.llm import LLMJudge
from evals.tasks.base import Split, Task
from methods.registry import get_method
from methods.targets import AUDIT_BUDGET_BYTES, TargetContext, audit_records, build
from methods.train_config import load_records
from repro.driver.config import ResolvedConfig, make_task, resolve
from repro.driver.recipes import Recipe
from repro.driver.results import assemble_result
from repro.driver.schema import validate_result
from repro.runtime.cache import GenerationCache
from repro.runtime.generate import (
    DecodingParams,
    Generator,
    auto_backend,
    hf_model_of,
    hf_stage,
    lora_rank_bucket,
    make_generator,
)
from repro.runtime.store import (
    atomic_write_bytes,
    atomic_write_json,
    file_lock,
    jsonl_bytes,
    read_json,
    remove_stale_temporaries,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Cell:
    preset: str
    task: str
    method: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"


class CellRunner:
    """Runs cells of one recipe; keeps the base model loaded between cells (it serves every method's targets)."""

    def __init__(self, recipe: Recipe, *, data_dir: Path | None, work_root: Path, results_root: Path,
                 progress: bool = True, on_stage: Callable[[Cell, str], None] | None = None) -> None:
        self.recipe = recipe
        # Resolved once, here: every stage reads its settings from `config`, and every stage hash is taken over it.
        self._tasks: dict[str, Task] = {name: make_task(name, settings) for name, settings in recipe.tasks.items()}
        self.config: ResolvedConfig = resolve(recipe, tasks=self._tasks)
        self.data_dir = data_dir
        self.work = Path(work_root) / recipe.name
        self.results = Path(results_root) / recipe.name
        self.cache = GenerationCache(Path(work_root) / "cache" / "generations")
        self.bench_cache = Path(work_root) / "cache" / "benchmarks"
        self.progress = progress
        self.on_stage = on_stage or (lambda cell, stage: None)
        # (cell, detail) within a running stage, e.g. "step 12/93": the progress line shows it, the stage goes on
        self.on_progress: Callable[[Cell, str], None] = lambda cell, detail: None
        # called with every such report: `run --commit` carries the running stage's resume points from it, every
        # few minutes (repro.driver.carry, save_partial); a stage with reports is a stage worth resuming
        self.on_tick: Callable[[Cell], None] = lambda cell: None
        # (cell, stage) after a stage's artefacts are on disk: `run --commit` carries them (repro.driver.carry)
        self.on_stage_done: Callable[[Cell, str], None] = lambda cell, stage: None
        self.bench_written: set[Path] = set()      # benchmark score files this runner wrote
        self._running: Cell | None = None         # the cell `run` is computing: generators and scorers report to it
        self._base: Generator | None = None
        self._splits: dict[tuple[str, str], Split] = {}
        self._judges_attached: set[str] = set()

    def clean_interrupted_writes(self) -> int:
        """Remove temporaries of atomic writes a killed run left. Only the driver calls this, holding the preset's
        driver lock: a worker doing it could delete a temporary another process is about to rename."""
        return sum(remove_stale_temporaries(f) for f in (self.work, self.results, self.bench_cache))

    # --- shared pieces ---------------------------------------------------------------------------------------
    def task(self, name: str) -> Task:
        t = self._tasks[name]
        tc = self.config.tasks[name]
        if tc.judge_model is not None and name not in self._judges_attached:
            # The paper's judge is the base model itself (the default); `judge_model` names another one. A YAML spec
            # naming its own judge model replaces the generator given here (FileTask.use_llm_judge): no second load.
            own = getattr(t, "judge_model", None) not in (None, "base")
            if tc.judge_model != self.config.model and not own:
                # vLLM runs one engine per process (the recipe's model): another judge model generates on HF
                judge_gen = self.make_generator(tc.judge_model, None,
                                                backend="hf" if self.backend == "vllm" else None)
            else:
                judge_gen = self.base_generator()
            t.use_llm_judge(LLMJudge(judge_gen, tc.judge_decoding))
            self._judges_attached.add(name)
        return t

    def split(self, name: str, split: str) -> Split:
        """A whole split of a task, loaded once per runner (its provenance goes into every result)."""
        if (name, split) not in self._splits:
            self._splits[(name, split)] = self.task(name).load_split(split, self.data_dir)
        return self._splits[(name, split)]

    def examples(self, name: str, split: str) -> list[dict]:
        tc = self.config.tasks[name]
        return seeded_subset(self.split(name, split).examples, getattr(tc, split), self.config.data_seed)

    def decoding(self, name: str, kind: str) -> DecodingParams:
        """The resolved decoding of a task's prediction (``predict``) or paraphrase (``paraphrase``) prompt."""
        tc = self.config.tasks[name]
        return tc.paraphrase if kind == "paraphrase" else tc.predict

    @property
    def backend(self) -> str:
        """The generation backend the recipe's setting resolves to here ("auto": vLLM where it serves the model, else HF)."""
        b = self.config.generation.backend
        return auto_backend(self.config.model) if b == "auto" else b

    def make_generator(self, model: str, adapter: Path | None, *, backend: str | None = None) -> Generator:
        """A generator for `model` (+ `adapter`) under the recipe's generation settings. With vLLM an adapter is
        a LoRA request on the process's one engine, or on CPU (``generation.vllm.serve_adapters``) merged into a
        checkpoint served by a second engine (repro.runtime.generate.VLLMEngine, merged_engine)."""
        g = self.config.generation
        # vLLM: the engine's LoRA slots sized to the recipe's adapters (lora_rank_bucket), unless the recipe says
        engine = {"max_lora_rank": lora_rank_bucket(self.config.train.lora_r), **(g.vllm or {})}
        gen = make_generator(model, adapter, backend=backend or self.backend, cache=self.cache,
                             batch_size=g.batch_size, engine=engine)
        gen.on_batch = lambda done, total: self._detail(f"generated {done}/{total}")
        return gen

    def _detail(self, text: str) -> None:
        """Progress within the running cell's stage (generation batches, benchmark chunks) for its progress line."""
        if self._running is not None:
            self._report(self._running, text)

    def _report(self, cell: Cell, text: str) -> None:
        self.on_progress(cell, text)
        self.on_tick(cell)

    def base_generator(self) -> Generator:
        if self._base is None:
            self._base = self.make_generator(self.config.model, None)
        return self._base

    def base_scoring_model(self) -> Any:
        """The base model as an HF model, for log-likelihood work (base benchmarks, forgetting): the HF base
        generator's own model, else (vLLM keeps its weights where torch cannot score with them) the base
        checkpoint loaded. Never a tuned model: base scores come from the base model or from nowhere."""
        model = hf_model_of(self.base_generator())
        if hasattr(model, "disable_adapter"):       # a PeftModel: a tuned model, whatever its generator says
            raise RuntimeError(f"the base scoring model of {self.config.model!r} carries an adapter")
        return model

    # Stage hashes: repro.driver.config says what each covers.
    def targets_hash(self, cell: Cell) -> str:
        return self.config.targets_hash(cell.task, cell.method)

    def train_config(self, cell: Cell):
        return self.config.train_config(cell.seed)

    def train_hash(self, cell: Cell) -> str:
        return self.config.train_hash(cell.task, cell.method, cell.seed)

    def cell_hash(self, cell: Cell) -> str:
        return self.config.cell_hash(cell.task, cell.method, cell.seed)

    def eval_tasks(self, cell: Cell) -> list[str]:
        return self.config.eval_tasks(cell.task)

    def paths(self, cell: Cell) -> dict[str, Path]:
        base = self.work / cell.task / cell.method
        return {"targets": base / "targets", "train": base / f"seed{cell.seed}",
                "result": self.results / cell.task / cell.method / f"seed{cell.seed}"}

    # --- state ------------------------------------------------------------------------------------------------
    def foreign_result(self, cell: Cell) -> str | None:
        """The config hash of a valid result in this cell's folder that another configuration wrote (other overrides,
        or code whose stage hashes changed): running the cell would replace it. None when there is none."""
        result = self.paths(cell)["result"] / "result.json"
        if not result.is_file() or validate_result(result):
            return None
        found = read_json(result)["cell"]["config_hash"]
        return None if found == self.cell_hash(cell) else found

    def state(self, cell: Cell) -> str:
        """"done" (valid result with this config), else how far the artefacts go: "trained", "targets", "todo"."""

        p = self.paths(cell)
        result = p["result"] / "result.json"
        if result.is_file() and not validate_result(result):
            if read_json(result)["cell"]["config_hash"] == self.cell_hash(cell):
                return "done"
        log_path = p["train"] / "train_log.json"
        if log_path.is_file() and read_json(log_path).get("config_hash") == self.train_hash(cell):
            return "trained"
        summary = p["targets"] / "targets_summary.json"
        if summary.is_file() and read_json(summary).get("config_hash") == self.targets_hash(cell):
            return "targets"
        return "todo"

    # --- stages -----------------------------------------------------------------------------------------------
    def build_targets(self, cell: Cell) -> tuple[dict, bool]:
        """The method's targets for this task (shared by all seeds); returns (summary, reused)."""

        out = self.paths(cell)["targets"]
        h = self.targets_hash(cell)
        with file_lock(out.parent / ".targets.lock"):
            summary_path = out / "targets_summary.json"
            if summary_path.is_file() and read_json(summary_path).get("config_hash") == h:
                return read_json(summary_path), True
            self.on_stage(cell, "targets")
            ctx = TargetContext(self.task(cell.task), self.examples(cell.task, "train"), self.base_generator,
                                self.decoding(cell.task, "predict"), self.decoding(cell.task, "paraphrase"),
                                cache=self.cache, progress=self.progress, on_detail=self._detail)
            summary = build(cell.method, ctx, out, extra={"config_hash": h})
        self.on_stage_done(cell, "targets")
        return summary, False

    def train(self, cell: Cell) -> tuple[dict, Path | None]:
        # the training core imports torch, accelerate and peft at module level: loaded only when a cell trains
        from methods.train import train as train_core  # noqa: PLC0415

        p = self.paths(cell)
        h = self.train_hash(cell)
        log_path = p["train"] / "train_log.json"
        if log_path.is_file() and read_json(log_path).get("config_hash") == h:
            train_log = read_json(log_path)
        else:
            records = load_records(p["targets"] / "targets.jsonl")
            if not records:
                train_log = {"skipped": True, "reason": "the method kept no training targets", "config_hash": h,
                             "config": self.train_config(cell).to_dict(), "steps": [], "final_loss": None,
                             "wall_time_s": 0.0, "trained_tokens_per_s": None, "adapter_sha256": None}
                atomic_write_json(log_path, train_log)
                return train_log, None
            budget_records = None
            ref = self.config.budget_reference(cell.method)
            if ref is not None:                       # a budget control: the reference method's targets first
                ref_cell = Cell(cell.preset, cell.task, ref, cell.seed)
                self.build_targets(ref_cell)
                budget_records = load_records(self.paths(ref_cell)["targets"] / "targets.jsonl")
            self.on_stage(cell, "train")

            def on_step(record: dict) -> None:
                self._report(cell, f"step {record['step']}/{record['total_steps']}, loss {record['loss']:.4f}")

            # A checkpoint in p["train"] of this same run (a killed earlier attempt) is resumed from (methods.train).
            with hf_stage():                          # a vLLM engine sleeps while training has the GPU
                train_log = train_core(self.config.model, records, self.train_config(cell), p["train"],
                                       progress=self.progress, extra={"config_hash": h},
                                       budget_records=budget_records, on_step=on_step)
            if ref is not None:
                train_log["data"]["token_budget"]["method"] = ref
            train_log["adapter_sha256"] = _adapter_sha(p["train"] / "adapter")
            atomic_write_json(log_path, train_log)
            self.on_stage_done(cell, "training")
        if train_log.get("skipped"):
            return train_log, None
        return train_log, p["train"] / "adapter"

    def benchmarks(self, generator: Generator, hf_model: Callable[[], Any]) -> dict | None:
        """Generalization scores through lm-eval, cached per (model, adapter, benchmark settings). `hf_model`
        returns the HF model that `generator` generates with; it is called only when the cache misses."""
        ev = self.config.evaluation
        if not ev.benchmarks:
            return None

        # Keyed by the scored model's identity and the benchmark-stage hash (every resolved benchmark setting).
        path = self.bench_cache / f"{self.config.benchmark_cache_key(generator.identity)}.json"
        if path.is_file():
            return read_json(path)
        # answers are journalled as they complete: a scoring killed midway resumes from its last finished chunk
        journal = self.bench_cache / "journal" / f"{path.stem}.jsonl"
        out = evaluate_benchmarks(hf_model(), generator.tokenizer, [b.spec() for b in ev.benchmarks],
                                  data_dir=self.data_dir, seed=ev.benchmark_seed, batch_size=ev.benchmark_batch_size,
                                  chat_template=ev.chat_template, kl_texts=ev.cross_domain_kl_texts,
                                  backend=ev.benchmark_backend, journal=journal, on_progress=self._detail)
        atomic_write_json(path, out)
        journal.unlink(missing_ok=True)             # the scores are in `path` now
        self.bench_written.add(path)
        if self._running is not None:
            self.on_stage_done(self._running, "benchmarks of the " + ("base" if generator.adapter is None else "tuned")
                               + " model")
        return out

    def evaluate(self, cell: Cell, adapter: Path | None) -> dict:
        """Generation first (in-domain tasks, the base answers the forgetting signal compares against), then
        every log-likelihood measure in one HF stage (a vLLM engine sleeps through it)."""

        self.on_stage(cell, "evaluate")
        base = self.base_generator()
        tuned = base if adapter is None else self.make_generator(self.config.model, adapter)
        seconds: dict[str, float] = {}
        names = self.eval_tasks(cell)
        t0 = time.perf_counter()
        scores = {n: evaluate_task(self.task(n), self.examples(n, "test"), tuned, self.decoding(n, "predict"),
                                   cache=self.cache, progress=self.progress) for n in names}
        seconds["eval_tasks"] = time.perf_counter() - t0
        self.on_stage_done(cell, "in-domain answers")
        for n in names:
            scores[n]["headline_metric"] = self.config.tasks[n].headline_metric
        if adapter is not None:
            t0 = time.perf_counter()
            prompts, own = self._forgetting_answers(cell)
            seconds["forgetting"] = time.perf_counter() - t0

        held: dict[str, Any] = {}                   # the HF models of this stage, loaded on first use

        def hf_tuned() -> Any:
            if "tuned" not in held:             # vLLM generated: log-likelihood work needs an HF model
                held["tuned"] = hf_model_of(tuned)
            return held["tuned"]

        def hf_base() -> Any:
            if "base" not in held:
                held["base"] = self.base_scoring_model()
            return held["base"]

        general = base_general = forgetting = None
        with hf_stage():
            if self.config.evaluation.benchmarks:
                self.on_stage(cell, "benchmarks")
            t0 = time.perf_counter()
            general = self.benchmarks(tuned, hf_tuned)
            seconds["eval_general"] = time.perf_counter() - t0
            if general is not None and adapter is not None:
                t0 = time.perf_counter()
                base_general = self.benchmarks(base, hf_base)
                seconds["eval_general_base"] = time.perf_counter() - t0
            if adapter is not None:
                self.on_stage(cell, "forgetting")
                t0 = time.perf_counter()
                # an unmerged PEFT model scores the base with its adapter disabled: no second model in memory
                base_of = (lambda: None) if hasattr(hf_tuned(), "disable_adapter") else hf_base
                forgetting = self._forgetting(hf_tuned(), tuned.tokenizer, prompts, own, cell, base_of())
                if base_general is not None:
                    forgetting["cross_domain"] = self._cross_domain_kl(hf_tuned(), tuned.tokenizer, base_general,
                                                                       base_of, cell)
                seconds["forgetting"] += time.perf_counter() - t0
            held.clear()                            # dropped before the stage returns their memory
        return {"scores": scores, "forgetting": forgetting, "general": general, "base_general": base_general,
                "seconds": seconds, "generator": tuned.describe()}

    def _cross_domain_kl(self, hf_tuned: Any, tokenizer, base_general: dict,
                         base_model: Callable[[], Any], cell: Cell) -> dict | None:
        """KL(base||tuned) on texts of other domains: the headline benchmarks' first items (prompt + answer)."""

        names = list(self.config.evaluation.headline_benchmarks)
        texts = [t["text"] for n in names for t in (base_general.get("texts") or {}).get(n, [])]
        if not texts:
            return None
        return {**kl_on_texts(hf_tuned, tokenizer, texts, base=base_model(),
                              on_item=lambda i, n: self._report(cell, f"cross-domain KL text {i}/{n}")),
                "benchmarks": names}

    def _forgetting_answers(self, cell: Cell) -> tuple[list, list]:
        """Held-out prompts of the cell's task and the base model's greedy answers to them (cached by the base
        cell's evaluation; generated here otherwise, before any HF stage)."""
        n = self.config.evaluation.forgetting_prompts
        task = self.task(cell.task)
        prompts = [task.predict_messages(ex) for ex in self.examples(cell.task, "test")[:n]]
        own = self.base_generator().generate(prompts, self.decoding(cell.task, "predict"),
                                             tag=task.predict_tag,
                                             progress=self.progress)
        return prompts, own

    def _forgetting(self, hf_tuned: Any, tokenizer, prompts: list, own: list, cell: Cell, base_model: Any) -> dict:
        task = self.task(cell.task)
        exs = self.examples(cell.task, "test")[:len(prompts)]
        return {**forgetting_signal(hf_tuned, tokenizer, prompts, [o.text for o in own],
                                    [task.gold_response(ex) for ex in exs], base=base_model,
                                    base_truncated=[o.finish_reason == "length" for o in own],
                                    on_item=lambda i, n: self._report(cell, f"in-task KL prompt {i}/{n}")),
                "scope": "in-task: held-out prompts of the cell's own task"}

    # --- the whole cell ---------------------------------------------------------------------------------------
    def run(self, cell: Cell) -> dict:
        if self.state(cell) == "done":
            return read_json(self.paths(cell)["result"] / "result.json")
        self._running = cell
        try:
            return self._run(cell)
        finally:
            self._running = None

    def _run(self, cell: Cell) -> dict:
        method = get_method(cell.method)
        summary, train_log, adapter, targets_reused = None, None, None, False
        if method.trains:
            summary, targets_reused = self.build_targets(cell)
            train_log, adapter = self.train(cell)
        ev = self.evaluate(cell, adapter)
        self.on_stage(cell, "write")

        result, items = assemble_result(self, cell, summary, targets_reused, train_log, ev)
        out = self.paths(cell)["result"]
        data = jsonl_bytes(items, compress=True)
        atomic_write_bytes(out / "items.jsonl.gz", data)
        result["items"]["sha256"] = hashlib.sha256(data).hexdigest()
        result["targets_audit"] = self._write_audit(cell, out) if summary is not None else None
        atomic_write_json(out / "result.json", result)     # last: its presence marks the cell done
        return result

    def _write_audit(self, cell: Cell, out: Path) -> dict:
        """The cell's targets and every candidate, compressed beside its result (docs/presets-and-scaling.md:
        Outputs, size budget)."""

        records = audit_records(self.paths(cell)["targets"])
        data = jsonl_bytes(records, compress=True)
        atomic_write_bytes(out / "targets_audit.jsonl.gz", data)
        if len(data) > AUDIT_BUDGET_BYTES:
            log.warning("%s: targets audit is %d bytes, over the %d-byte budget", cell.label, len(data),
                        AUDIT_BUDGET_BYTES)
        return {"path": "targets_audit.jsonl.gz", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                "n_examples": len(records), "budget_bytes": AUDIT_BUDGET_BYTES}


def _adapter_sha(folder: Path) -> str | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()

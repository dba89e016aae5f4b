"""Typed, resolved configuration of a grid, and the hash of every stage taken over it.

A recipe (repro/recipes/*.yaml plus ``key=value`` overrides, repro.driver.recipes) says only what it changes; the
rest comes from task defaults (e.g. ``GSM8K.max_new_tokens``, a task's stop strings and prompt/judge versions) and
code defaults (`TrainConfig`, the generation and evaluation defaults below, the benchmark registry, the LLM judge's
token cap). `resolve` fills all of it in ONCE, into frozen dataclasses; the driver (repro.driver.cell) reads only
these, and each stage's hash covers exactly the resolved values that can change that stage's output - so a changed
default makes what it produced stale, and nothing else.

Stage hashes (what each covers; a stage's hash includes the hash of the stage it consumes):
  targets     model, method, the task's identity (name, prompt/judge versions, judge kind and model, a YAML spec's
              sha256), the acceptance checks' versions (filter, validity, truncation rule, paraphrase prompt), the
              train subset (size, data_seed), predict and paraphrase decoding (token caps, stop strings, sampling),
              generation backend and batch size
  train       targets hash + the full TrainConfig (every field, defaults included, but `checkpoint_minutes`, and
              `precision` only when set away from "auto": `TrainConfig.hashed`) with the cell's seed + (a budget
              control, `Method.trained_tokens_of`) the reference method and its targets hash
  in_domain   per evaluated task: its identity, test subset (size, data_seed), predict decoding, generation settings
              (the evaluated model is not in it: the cell's upstream hash carries that)
  benchmarks  each benchmark's resolved spec (limit, num_fewshot, its registry entry), seed, batch size, chat
              template, cross-domain KL texts, scoring backend, per-item record version (the cache key adds the
              scored model's identity)
  cell        (task, method, seed) + upstream (train hash for a trained method; model + generation otherwise) +
              the in_domain hash of every task the cell evaluates (cross_task) + benchmarks + headline benchmarks +
              (trained methods) the forgetting prompt count

Kept out on purpose: a task's ``headline_metric`` (which number a table leads with; `repro rescore` re-derives it
from stored responses, so no artefact is stale), and ``eval_batch_size`` (accepted in recipes, read by nothing).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from evals.benchmarks import BENCHMARKS, BenchmarkSpec
from evals.data import DataError
from evals.judges import llm as llm_judge
from evals.tasks import get_task
from evals.tasks.base import Task
from methods.registry import get_method, method_ids
from methods.targets import check_versions
from methods.train_config import TrainConfig
from repro.driver.recipes import Recipe, config_hash, headline_benchmarks, headline_metric
from repro.runtime.generate import DecodingParams

#: Version of the per-item benchmark records (log p of the correct choice); part of the benchmark-stage hash.
BENCHMARK_ITEMS_VERSION = "logp_correct-v1"


@dataclass(frozen=True)
class GenerationConfig:
    """How every generation of the grid runs (recipe ``generation:``)."""

    backend: str = "auto"           # hf | vllm | auto (vLLM where installed and it serves the model: GPU or CPU build)
    batch_size: int = 16
    # vLLM engine sizing (e.g. gpu_memory_utilization): decides where memory goes, not what is generated, so it is
    # kept out of every hash (to_dict)
    vllm: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return {"backend": self.backend, "batch_size": self.batch_size}


@dataclass(frozen=True)
class TaskConfig:
    """One task of the grid with every default filled in (recipe ``tasks.<name>:`` + the task class)."""

    name: str
    spec: str | None                # absolute path of a YAML task spec; None for a built-in task
    options: dict[str, Any]         # constructor options of the task (``judge`` for reading tasks)
    train: int | None               # size of the seeded train subset; None = the whole split
    test: int | None
    predict: DecodingParams         # the prediction prompt (targets from own answers, and evaluation)
    paraphrase: DecodingParams      # the paraphrase prompt (targets)
    identity: dict[str, Any]        # versions of the task's prompt and judge (Task.describe), judge kind/spec
    checks: dict[str, Any]          # versions of every rule that accepts a candidate target (methods.targets)
    judge_model: str | None         # LLM judge only: the model that judges (None: a deterministic judge)
    judge_decoding: DecodingParams | None
    headline_metric: str = "acc"    # presentation only: not in any hash (see module docstring)

    def judged_by(self) -> dict:
        """What decides a verdict: the task identity, plus the judge model and its decoding for an LLM judge."""
        return {**self.identity, "judge_model": self.judge_model,
                "judge_decoding": self.judge_decoding.to_dict() if self.judge_decoding else None}


@dataclass(frozen=True)
class BenchmarkConfig:
    """One generalization benchmark: the recipe's limit and num_fewshot, the registry's defaults filled in."""

    name: str
    limit: int | None
    num_fewshot: int
    registry: dict[str, Any]        # evals.benchmarks.BENCHMARKS[name], as a dict (metrics, files, few-shot default)

    def spec(self) -> BenchmarkSpec:
        return BenchmarkSpec(name=self.name, limit=self.limit, num_fewshot=self.num_fewshot)


@dataclass(frozen=True)
class EvaluationConfig:
    """Recipe ``evaluation:`` with its defaults."""

    cross_task: bool | tuple[str, ...] = True
    forgetting_prompts: int = 32
    benchmarks: tuple[BenchmarkConfig, ...] = ()
    benchmark_seed: int = 1234
    benchmark_batch_size: int = 8
    chat_template: bool = False
    cross_domain_kl_texts: int = 0
    benchmark_backend: str = "packed"
    headline_benchmarks: tuple[str, ...] = ()

    def benchmark_settings(self) -> dict | None:
        """Everything that decides a benchmark score except the scored model; None when no benchmark runs."""
        if not self.benchmarks:
            return None
        return {"specs": [{"name": b.name, "limit": b.limit, "num_fewshot": b.num_fewshot, "registry": b.registry}
                          for b in self.benchmarks],
                "seed": self.benchmark_seed, "batch_size": self.benchmark_batch_size,
                "chat_template": self.chat_template, "kl_texts": self.cross_domain_kl_texts,
                "backend": self.benchmark_backend, "items": BENCHMARK_ITEMS_VERSION}


@dataclass(frozen=True)
class ResolvedConfig:
    """A whole recipe, resolved: what the driver reads, and the stage hashes over it."""

    name: str
    model: str
    data_seed: int
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    tasks: dict[str, TaskConfig]
    generation: GenerationConfig
    train: TrainConfig              # seed: the recipe's (normally unset, 0); a cell's comes from `train_config`
    evaluation: EvaluationConfig
    source: str = ""
    _trains: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    # --- derived settings ------------------------------------------------------------------------------------
    def train_config(self, seed: int) -> TrainConfig:
        return dataclasses.replace(self.train, seed=seed,
                                   lora_target_modules=list(self.train.lora_target_modules))

    def eval_tasks(self, task: str) -> list[str]:
        """The cell's own task first, then the other tasks ``evaluation.cross_task`` asks for: true = every task of
        the recipe, false = none, a list = those tasks (a cheaper partial cross-task matrix)."""
        cross = self.evaluation.cross_task
        others = list(self.tasks) if cross is True else list(cross or [])
        return [task] + [t for t in others if t != task]

    def trains(self, method: str) -> bool:
        """Whether a method trains an adapter. A method outside the registry (``repro eval``'s external adapter)
        comes from outside the suite: nothing upstream of it is ours to hash."""
        if method not in self._trains:
            self._trains[method] = method in method_ids() and bool(get_method(method).trains)
        return self._trains[method]

    # --- stage hashes ----------------------------------------------------------------------------------------
    def targets_hash(self, task: str, method: str) -> str:
        t = self.tasks[task]
        return config_hash({"stage": "targets", "model": self.model, "method": method, "task": t.judged_by(),
                            "checks": t.checks, "examples": {"split": "train", "limit": t.train,
                                                             "data_seed": self.data_seed},
                            "decoding": {"predict": t.predict.to_dict(), "paraphrase": t.paraphrase.to_dict()},
                            "generation": self.generation.to_dict()})

    def budget_reference(self, method: str) -> str | None:
        """The method whose trained tokens `method` is trained for (`Method.trained_tokens_of`), if any."""
        return get_method(method).trained_tokens_of if method in method_ids() else None

    def train_hash(self, task: str, method: str, seed: int) -> str:
        stage = {"stage": "train", "targets": self.targets_hash(task, method), "train": self.train_config(seed).hashed()}
        ref = self.budget_reference(method)
        if ref is not None:             # only here: every other method's hash is what it was before controls existed
            stage["trained_tokens_of"] = {"method": ref, "targets": self.targets_hash(task, ref)}
        return config_hash(stage)

    def in_domain_hash(self, task: str) -> str:
        """Evaluating a model on a task's test subset (model-independent: the cell hash adds the model)."""
        t = self.tasks[task]
        return config_hash({"stage": "in_domain", "task": t.judged_by(),
                            "examples": {"split": "test", "limit": t.test, "data_seed": self.data_seed},
                            "decoding": t.predict.to_dict(), "generation": self.generation.to_dict()})

    def benchmark_hash(self) -> str | None:
        settings = self.evaluation.benchmark_settings()
        return None if settings is None else config_hash({"stage": "benchmarks", **settings})

    def benchmark_cache_key(self, identity: dict) -> str:
        """Key of one model's cached benchmark scores: the scored model's identity + the benchmark-stage hash."""
        return config_hash({"identity": identity, "benchmarks": self.benchmark_hash()})

    def cell_hash(self, task: str, method: str, seed: int) -> str:
        trains = self.trains(method)
        upstream = (self.train_hash(task, method, seed) if trains
                    else {"model": self.model, "generation": self.generation.to_dict()})
        return config_hash({"stage": "cell", "cell": [task, method, seed], "upstream": upstream,
                            "in_domain": {t: self.in_domain_hash(t) for t in self.eval_tasks(task)},
                            "benchmarks": self.benchmark_hash(),
                            "headline_benchmarks": list(self.evaluation.headline_benchmarks),
                            "forgetting": {"prompts": self.evaluation.forgetting_prompts} if trains else None})

    def stage_hashes(self, task: str, method: str, seed: int) -> dict[str, Any]:
        """Every stage hash of one cell (targets and train are None for a method that does not train)."""
        trains = self.trains(method)
        return {"targets": self.targets_hash(task, method) if trains else None,
                "train": self.train_hash(task, method, seed) if trains else None,
                "in_domain": {t: self.in_domain_hash(t) for t in self.eval_tasks(task)},
                "benchmarks": self.benchmark_hash(), "cell": self.cell_hash(task, method, seed)}


# --- resolution ----------------------------------------------------------------------------------------------
def _or_default(settings: dict, key: str, default: Any) -> Any:
    """A recipe value, or the default when the key is absent or null (``max_new_tokens: null`` = the task's)."""
    value = settings.get(key)
    return default if value is None else value


def make_task(name: str, settings: dict | None) -> Task:
    """The task instance a recipe entry describes (a built-in name or a YAML spec, with its judge option)."""
    settings = settings or {}
    options = {"judge": settings["judge"]} if settings.get("judge") is not None else {}
    return get_task(settings.get("file") or name, **options)


def resolve_task(name: str, settings: dict | None, *, model: str, task: Task | None = None) -> TaskConfig:
    settings = dict(settings or {})
    task = task or make_task(name, settings)
    stop = tuple(task.stop)
    predict = DecodingParams(max_new_tokens=int(_or_default(settings, "max_new_tokens", task.max_new_tokens)),
                             stop=stop)
    paraphrase = DecodingParams(max_new_tokens=int(_or_default(settings, "paraphrase_max_new_tokens",
                                                               task.paraphrase_max_new_tokens)), stop=stop)
    judge_model, judge_decoding = None, None
    if getattr(task, "judge_kind", None) == "llm":
        # The paper's judge is the base model itself (the default); `judge_model` names another one, and a YAML
        # spec naming its own judge model overrides both (FileTask.use_llm_judge).
        spec_model = getattr(task, "judge_model", None)
        judge_model = (spec_model if spec_model not in (None, "base")
                       else settings.get("judge_model") or model)
        judge_decoding = DecodingParams(max_new_tokens=llm_judge.MAX_NEW_TOKENS)
    return TaskConfig(name=name, spec=settings.get("file"),
                      options={"judge": settings["judge"]} if settings.get("judge") is not None else {},
                      train=settings.get("train"), test=settings.get("test"), predict=predict,
                      paraphrase=paraphrase, identity=task.describe(), checks=check_versions(task),
                      judge_model=judge_model, judge_decoding=judge_decoding,
                      headline_metric=headline_metric(settings))


def resolve_evaluation(evaluation: dict | None) -> EvaluationConfig:
    ev = dict(evaluation or {})
    d = EvaluationConfig()
    benches = []
    for name, opts in (ev.get("benchmarks") or {}).items():
        opts = opts or {}
        entry = BENCHMARKS.get(name)
        if entry is None:
            raise DataError(f"evaluation.benchmarks: unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
        benches.append(BenchmarkConfig(name=name, limit=opts.get("limit"),
                                       num_fewshot=int(_or_default(opts, "num_fewshot", entry.default_num_fewshot)),
                                       registry=dataclasses.asdict(entry)))
    cross = _or_default(ev, "cross_task", d.cross_task)
    return EvaluationConfig(
        cross_task=cross if isinstance(cross, bool) else tuple(cross),
        forgetting_prompts=int(_or_default(ev, "forgetting_prompts", d.forgetting_prompts)),
        benchmarks=tuple(benches),
        benchmark_seed=int(_or_default(ev, "benchmark_seed", d.benchmark_seed)),
        benchmark_batch_size=int(_or_default(ev, "benchmark_batch_size", d.benchmark_batch_size)),
        chat_template=bool(_or_default(ev, "chat_template", d.chat_template)),
        cross_domain_kl_texts=int(_or_default(ev, "cross_domain_kl_texts", d.cross_domain_kl_texts)),
        benchmark_backend=str(_or_default(ev, "benchmark_backend", d.benchmark_backend)),
        headline_benchmarks=tuple(headline_benchmarks(ev)))


def resolve(recipe: Recipe, *, tasks: dict[str, Task] | None = None) -> ResolvedConfig:
    """Resolve a recipe once. `tasks`: task instances already made for it (reused for their defaults)."""
    g = GenerationConfig()
    gen = recipe.generation or {}
    unknown = set(gen) - {f.name for f in dataclasses.fields(GenerationConfig)}
    if unknown:
        raise DataError(f"recipe {recipe.name}: generation has unknown keys {sorted(unknown)}; known: "
                         f"{sorted(f.name for f in dataclasses.fields(GenerationConfig))}")
    generation = GenerationConfig(backend=str(_or_default(gen, "backend", g.backend)),
                                  batch_size=int(_or_default(gen, "batch_size", g.batch_size)),
                                  vllm=dict(gen["vllm"]) if gen.get("vllm") else None)
    return ResolvedConfig(
        name=recipe.name, model=recipe.model, data_seed=int(recipe.data_seed), seeds=tuple(recipe.seeds),
        methods=tuple(recipe.methods),
        tasks={name: resolve_task(name, settings, model=recipe.model, task=(tasks or {}).get(name))
               for name, settings in recipe.tasks.items()},
        generation=generation,
        train=TrainConfig.from_dict({k: v for k, v in (recipe.train or {}).items() if k != "seed"}),
        evaluation=resolve_evaluation(recipe.evaluation), source=recipe.source)

"""Presets as recipes: one YAML file per preset in repro/recipes/, every knob commented there.

A recipe is the full specification of a grid. ``load_recipe`` reads a preset name or a YAML path and applies
``key=value`` overrides with dotted keys (``train.epochs=1``, ``tasks.squad.train=32``), values parsed as YAML.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.benchmarks import BENCHMARKS
from evals.data import DataError, load_yaml_text, parse_json_line, read_text_file
from evals.tasks import TASKS, check_task_name
from evals.tasks.from_file import FileTask, is_task_file
from methods.registry import method_ids
from methods.train_config import TrainConfig

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"

TASK_KEYS = {"train", "test", "max_new_tokens", "paraphrase_max_new_tokens", "judge", "eval_batch_size",
             "headline_metric", "judge_model",
             "file"}    # file: a YAML task spec (evals/tasks/from_file.py); the key is then the spec's name
# The in-domain number a table leads with: the judge's accuracy, or (reading tasks) an official SQuAD metric.
HEADLINE_METRICS = {"acc", "em", "f1", "containment"}
READING_TASKS = {"squad", "nq_open"}
EVAL_KEYS = {"cross_task", "forgetting_prompts", "benchmarks", "benchmark_batch_size", "chat_template",
             "benchmark_seed", "headline_benchmarks", "cross_domain_kl_texts", "benchmark_backend"}


@dataclass
class Recipe:
    name: str
    model: str
    tasks: dict[str, dict]                       # task -> {train, test, max_new_tokens, ...}
    methods: list[str]
    seeds: list[int]
    train: dict[str, Any]                        # methods.train.TrainConfig fields
    data_seed: int = 1234
    generation: dict[str, Any] = field(default_factory=dict)   # backend, batch_size
    evaluation: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    # method -> its seeds, for a method that runs fewer (or other) seeds than `seeds`, e.g. a costly control
    method_seeds: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        keys = ("name", "model", "description", "data_seed", "seeds", "methods", "tasks", "train", "generation",
                "evaluation") + (("method_seeds",) if self.method_seeds else ())
        return {k: copy.deepcopy(getattr(self, k)) for k in keys}

    def seeds_of(self, method: str, seeds: list[int] | None = None) -> list[int]:
        """The training seeds `method` runs: `method_seeds` where it names the method, else `seeds`; a run's
        ``--seeds`` (`seeds`) narrows both (a method in `method_seeds` keeps only its seeds among them)."""
        run = list(seeds if seeds is not None else self.seeds)
        own = self.method_seeds.get(method)
        return run if own is None else [s for s in own if seeds is None or s in run]


def available_presets() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise DataError(f"override {dotted}: {k} is not a mapping")
    d[keys[-1]] = value


def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    out = []
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise DataError(f"override {item!r} is not key=value (e.g. train.epochs=1)")
        key, raw = item.split("=", 1)
        out.append((key.strip(), load_yaml_text(raw, f"override {item!r}") if raw.strip() else None))
    return out


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise DataError(f"no preset {name_or_path!r}: not a recipe file, and not one of {', '.join(available_presets())}"
                        " (python -m repro ls presets)")
    raw = load_yaml_text(read_text_file(path, "recipe"), path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a recipe must be a mapping of keys (name, model, tasks, methods, seeds, train), "
                        f"got {'an empty file' if raw is None else type(raw).__name__}")
    if isinstance(raw, dict) and isinstance(raw.get("tasks"), dict):
        raw["tasks"] = resolve_task_files(raw["tasks"], path.parent)
    for key, value in parse_overrides(overrides):
        if key.startswith("model.") and isinstance(raw, dict) and isinstance(raw.get("model"), str):
            raw["model"] = {"name": raw["model"]}      # `model.revision=SHA` on a recipe that names the model only
        _set_dotted(raw, key, value)
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw["model"] = pinned_model_name(raw["model"], path)
    missing = {"name", "model", "tasks", "methods", "seeds", "train"} - set(raw)
    if missing:
        raise DataError(f"{path}: missing keys {sorted(missing)}")
    unknown = set(raw) - {"name", "model", "tasks", "methods", "seeds", "train", "data_seed", "generation",
                          "evaluation", "description", "method_seeds"}
    if unknown:
        raise DataError(f"{path}: unknown keys {sorted(unknown)}")
    for key, kind in (("name", str), ("model", str), ("tasks", dict), ("methods", list), ("seeds", list),
                      ("train", dict), ("generation", dict), ("evaluation", dict), ("method_seeds", dict),
                      ("data_seed", int)):
        if key in raw and (not isinstance(raw[key], kind) or isinstance(raw[key], bool)):
            raise DataError(f"{path}: {key}: must be {_KIND_NAMES[kind]}, got {raw[key]!r}")
    recipe = Recipe(source=str(path), **{k: raw[k] for k in raw})
    validate_recipe(recipe)
    return recipe


_KIND_NAMES = {str: "a string", dict: "a mapping", list: "a list", int: "an integer"}


def pinned_model_name(model: dict, where: Path | str) -> str:
    """``model: {name: org/repo, revision: SHA}`` (or the override ``model.revision=SHA``) as the one string every loader
    takes, ``org/repo@SHA`` (repro.runtime.models.resolve). Without a revision a hub model is pinned at first use to
    the commit its local snapshot holds (or the hub's main branch), recorded in each result's provenance."""
    bad = set(model) - {"name", "revision"}
    if bad or not isinstance(model.get("name"), str):
        raise DataError(f"{where}: model must be a name or {{name: ..., revision: ...}}; got {model}")
    name, revision = model["name"], model.get("revision")
    if revision is None:
        return name
    revision = str(revision)                          # YAML reads an all-digit sha as a number
    if "@" in name:
        raise DataError(f"{where}: model {name!r} already names a revision; model.revision={revision!r} too")
    return f"{name}@{revision}"


def task_entry(key: str, settings: dict | None, base_dir: Path | None = None) -> tuple[str, dict]:
    """(task name, settings) of one ``tasks:`` entry. A YAML task spec - given as the key (``my/task.yaml: {...}``)
    or as ``file:`` - is keyed by the name inside it, with ``file`` its absolute path; a built-in task is unchanged.
    Relative spec paths resolve against the working directory, else against `base_dir` (the recipe's folder)."""

    if settings is not None and not isinstance(settings, dict):
        raise DataError(f"tasks.{key}: must be a mapping of settings (train, test, ...), got {settings!r}")
    settings = dict(settings or {})
    file = settings.get("file") or (key if is_task_file(key) else None)
    if file is not None and not isinstance(file, str):
        raise DataError(f"tasks.{key}.file: must be a path to a task file, got {file!r}")
    if file is None:
        check_task_name(key)
        return key, settings
    if not is_task_file(file):
        check_task_name(file)
    p = Path(file).expanduser()
    if not p.is_absolute() and not p.is_file() and base_dir is not None and (base_dir / p).is_file():
        p = base_dir / p
    task = FileTask(p)
    if not is_task_file(key) and key != task.name:
        raise DataError(f"tasks.{key}: the spec {p} declares name {task.name!r}; use that name as the key")
    return task.name, {**settings, "file": str(task.path)}


def resolve_task_files(tasks: dict, base_dir: Path | None = None) -> dict:
    out: dict[str, dict] = {}
    for key, settings in tasks.items():
        name, resolved = task_entry(key, settings, base_dir)
        if name in out:
            raise DataError(f"tasks: {name!r} appears twice (once as {key!r})")
        out[name] = resolved
    return out


def validate_recipe(r: Recipe) -> None:
    where = f"recipe {r.name} ({r.source})"
    for task, settings in r.tasks.items():
        if task not in TASKS and not (settings or {}).get("file"):
            raise DataError(f"{where}: unknown task {task!r}; known: {sorted(TASKS)}")
        bad = set(settings or {}) - TASK_KEYS
        if bad:
            raise DataError(f"{where}: tasks.{task} has unknown keys {sorted(bad)}; known: {sorted(TASK_KEYS)}")
        for key in ("train", "test", "max_new_tokens", "paraphrase_max_new_tokens", "eval_batch_size"):
            v = (settings or {}).get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                what = "a number of items" if key in ("train", "test") else "a positive integer"
                raise DataError(f"{where}: tasks.{task}.{key}: must be {what} >= 1 (leave it out for "
                                f"{'all items' if key in ('train', 'test') else 'the default'}), got {v!r}")
        judge = (settings or {}).get("judge")
        if judge is not None and (task not in READING_TASKS or judge not in ("match", "llm")):
            raise DataError(f"{where}: tasks.{task}.judge: {judge!r}: only the reading tasks "
                            f"{sorted(READING_TASKS)} take a judge (match or llm); a file task's judge is its spec's "
                            "judge: key")
        metric = (settings or {}).get("headline_metric", "acc")
        if metric not in HEADLINE_METRICS or (metric != "acc" and task not in READING_TASKS):
            raise DataError(f"{where}: tasks.{task}.headline_metric {metric!r}: 'acc' for any task, or one of "
                             f"{sorted(HEADLINE_METRICS - {'acc'})} for the reading tasks {sorted(READING_TASKS)}")
        if (settings or {}).get("judge_model") and (settings or {}).get("judge") != "llm":
            raise DataError(f"{where}: tasks.{task}.judge_model needs judge: llm")
    if not r.methods or not all(isinstance(m, str) for m in r.methods):
        raise DataError(f"{where}: methods must be a non-empty list of method names; known: {method_ids()}")
    for m in r.methods:
        if m not in method_ids():
            raise DataError(f"{where}: unknown method {m!r}; known: {method_ids()}")
    benchmarks = r.evaluation.get("benchmarks") or {}
    if not isinstance(benchmarks, dict):
        raise DataError(f"{where}: evaluation.benchmarks must map benchmark names to options, got {benchmarks!r}")
    for name, opts in benchmarks.items():
        if name not in BENCHMARKS:
            raise DataError(f"{where}: unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
        limit = (opts or {}).get("limit") if isinstance(opts, dict) or opts is None else "?"
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise DataError(f"{where}: evaluation.benchmarks.{name}: limit must be an integer >= 1 (leave it out "
                            f"for all items), got {opts!r}")
    bad = set(r.evaluation) - EVAL_KEYS
    if bad:
        raise DataError(f"{where}: evaluation has unknown keys {sorted(bad)}; known: {sorted(EVAL_KEYS)}")
    if r.evaluation.get("benchmark_backend", "packed") not in ("packed", "hf"):
        raise DataError(f"{where}: evaluation.benchmark_backend must be 'packed' (shared-prefix scoring, the "
                         f"default) or 'hf' (lm-eval's HF backend)")
    cross = r.evaluation.get("cross_task", True)
    if not isinstance(cross, bool) and not (isinstance(cross, list) and set(cross) <= set(r.tasks)):
        raise DataError(f"{where}: evaluation.cross_task must be true, false or a list of the recipe's tasks")
    headline = r.evaluation.get("headline_benchmarks")
    if headline is not None and not set(headline) <= set(r.evaluation.get("benchmarks") or {}):
        raise DataError(f"{where}: evaluation.headline_benchmarks {headline} must be among evaluation.benchmarks")
    try:
        TrainConfig.from_dict({k: v for k, v in r.train.items() if k != "seed"})
    except (ValueError, TypeError) as e:
        raise DataError(f"{where}: train: {e}") from None
    if not r.seeds or not all(isinstance(s, int) for s in r.seeds):
        raise DataError(f"{where}: seeds must be a non-empty list of integers")
    if not isinstance(r.method_seeds, dict):
        raise DataError(f"{where}: method_seeds must map methods to lists of seeds")
    for m, seeds in r.method_seeds.items():
        if m not in r.methods or m == "base":
            raise DataError(f"{where}: method_seeds.{m}: not a trained method of this recipe ({r.methods})")
        if not seeds or not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
            raise DataError(f"{where}: method_seeds.{m} must be a non-empty list of integers")


def headline_benchmarks(evaluation: dict) -> list[str]:
    """The benchmarks whose mean drop is the headline average (the paper's four): the recipe's
    ``evaluation.headline_benchmarks``, else the registry's ``headline`` flags among the recipe's benchmarks."""

    names = list(evaluation.get("benchmarks") or {})
    given = evaluation.get("headline_benchmarks")
    return list(given) if given is not None else [n for n in names if n in BENCHMARKS and BENCHMARKS[n].headline]


def headline_metric(task_settings: dict | None) -> str:
    """The metric a task's in-domain column leads with (recipe ``tasks.<t>.headline_metric``; default: judge acc)."""
    return (task_settings or {}).get("headline_metric", "acc")


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def adhoc_recipe(model: str | None, *, tasks: dict, benchmarks: dict | None = None, methods=("base",),
                 backend: str = "auto", batch_size: int = 16, forgetting_prompts: int = 32,
                 preset: str | None = None, overrides: list[str] | None = None) -> Recipe:
    """The recipe of a one-off command (`build`, `eval`): a preset's (with `model` replacing its model when given),
    else one named ``adhoc`` with the given tasks, methods and benchmarks, seed 0 and default training."""
    if preset:
        base = load_recipe(preset, overrides)
        if model:
            base.model = model
        unknown = [m for m in methods if m not in method_ids()]
        if unknown:
            raise DataError(f"unknown method {unknown[0]!r}; known: {', '.join(method_ids())}")
        return base
    if overrides:
        raise DataError(f"overrides {' '.join(overrides)}: key=value overrides apply to a preset; pass --preset")
    recipe = Recipe(name="adhoc", model=model, tasks=tasks, methods=list(methods), seeds=[0], train={},
                    generation={"backend": backend, "batch_size": batch_size},
                    evaluation={"benchmarks": benchmarks or {}, "cross_task": True,
                                "forgetting_prompts": forgetting_prompts},
                    source="command line")
    validate_recipe(recipe)
    return recipe


def train_options(config: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Training options of the `train` verb: a YAML file (a recipe's ``train:`` section, or the file itself when it
    has none), then ``key=value`` overrides (a ``train.`` prefix allowed, as in a recipe override)."""
    options: dict[str, Any] = {}
    if config:
        doc = load_yaml_text(read_text_file(Path(config), "training config"), config)
        if not isinstance(doc, dict) or not isinstance(doc.get("train", doc), dict):
            raise DataError(f"{config}: a training config is a mapping of options (or a recipe with a train: "
                            "mapping)")
        options.update(doc.get("train", doc))
    for key, value in parse_overrides(overrides):
        options[key.removeprefix("train.")] = value
    return options


def read_targets(path: Path) -> list[dict]:
    """The records of a targets.jsonl for the `train` verb; a missing, malformed or empty file is a DataError naming
    the line and field."""
    text = read_text_file(path, "targets file")
    records = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            r = parse_json_line(line, f"{path}:{lineno}")
            missing = [k for k in ("prompt", "target") if not isinstance(r, dict) or k not in r]
            if missing:
                raise DataError(f"{path}:{lineno}: field '{missing[0]}' is missing (a targets.jsonl line has prompt "
                                "and target, as `repro build` writes them)")
            records.append(r)
    if not records:
        raise DataError(f"{path}: no targets (the file is empty); nothing to train on")
    return records


def check_file_tasks(tasks: dict[str, dict], data_dir: Path | None) -> dict[str, tuple[int, int]]:
    """Read and check every row of each YAML task's train and test data (what a run would read first), so a broken
    file task fails in a dry run or before any model loads: name -> (training items, test items). Built-in tasks
    read their own checked datasets and are not re-read here."""
    counts = {}
    for name, settings in tasks.items():
        file = (settings or {}).get("file")
        if file:
            task = FileTask(file)
            counts[name] = tuple(len(task.load_split(split, data_dir).examples) for split in ("train", "test"))
    return counts

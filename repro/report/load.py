"""Finding and loading result files: one record per result.json, and the cells of a preset indexed for the tables.

A record (``CellResult``) is the result document of one driver cell (``repro.driver.cell.Cell``: preset, task,
method, seed) plus, lazily, its per-item records (items.jsonl.gz beside it). ``Grid`` is the records of one preset
with the display orders, and the cells the preset's recipe defines that have no result (a partial run).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

from repro.driver.cell import Cell
from repro.driver.grid import BASE_SEED
from repro.driver.recipes import load_recipe
from repro.driver.schema import find_results
from repro.runtime.provenance import REPO
from repro.runtime.store import read_jsonl

PAPER_REFERENCE = REPO / "results" / "paper_reference.json"
OUTPUT_DIRS = {"tables", "figures"}   # written by the report under a results dir: never results themselves

# Fixed display orders (paper order first, then anything else alphabetically): determinism and readability.
METHOD_ORDER = ["base", "sft", "sdft", "s3ft", "ssr", "self_only", "sft_matched"]
TASK_ORDER = ["gsm8k", "mbpp", "nq_open", "squad"]
BENCH_ORDER = ["mmlu", "mmlu_5shot", "truthfulqa_mc1", "truthfulqa_mc2", "hellaswag", "winogrande"]


def order(seq: Iterable[str], first: list[str]) -> list[str]:
    items = set(seq)
    return [x for x in first if x in items] + sorted(items - set(first))


def load_reference(path: Path = PAPER_REFERENCE) -> dict:
    """The paper's published values (results/paper_reference.json), shown beside ours in every table."""
    return json.loads(path.read_text())


class CellResult:
    """The result of one cell and, lazily, its per-item records."""

    def __init__(self, path: Path, doc: dict) -> None:
        self.path, self.doc = path, doc

    @cached_property
    def cell(self) -> Cell:
        c = self.doc["cell"]
        return Cell(c["preset"], c["task"], c["method"], int(c["seed"]))

    @property
    def task(self) -> str:
        return self.cell.task

    @property
    def method(self) -> str:
        return self.cell.method

    @property
    def seed(self) -> int:
        return self.cell.seed

    @property
    def acc(self) -> float:
        return float(self.doc["in_domain"]["acc,none"])

    @property
    def skipped(self) -> bool:
        """Training was skipped (e.g. self_only kept no targets): the row is the base model, flagged in tables."""
        return bool((self.doc.get("training") or {}).get("skipped"))

    @cached_property
    def items(self) -> list[dict]:
        return read_jsonl(self.path.parent / self.doc["items"]["path"])

    def bench_scores(self, bench: str) -> dict[str, float]:
        """item key -> primary-metric score. The key is ``key`` ("<subject>/<doc_id>" for MMLU, whose doc_ids
        repeat across subjects), falling back to item_key / doc_id for older records."""
        metric = self.doc["generalization"]["primary_metric"][bench].split(",")[0]
        return {str(it.get("key", it.get("item_key", it.get("doc_id")))): float(it[metric])
                for it in self.items if it["kind"] == "benchmark" and it["benchmark"] == bench}

    def bench_field(self, bench: str, field_: str) -> dict[str, float]:
        """item key -> another per-item field of a benchmark (e.g. logp_correct)."""
        return {str(it["key"]): float(it[field_]) for it in self.items
                if it["kind"] == "benchmark" and it["benchmark"] == bench}

    def has_bench_field(self, bench: str, field_: str) -> bool:
        recs = [it for it in self.items if it["kind"] == "benchmark" and it["benchmark"] == bench]
        return bool(recs) and all(it.get(field_) is not None for it in recs)

    def candidates(self) -> list[dict]:
        return [it for it in self.items if it["kind"] == "candidates"]

    @cached_property
    def timing(self) -> dict | None:
        """timing.json beside the result (wall and CPU seconds of every stage the cell's runs finished), or None
        for a cell run before the driver wrote it."""
        path = self.path.parent / "timing.json"
        return json.loads(path.read_text()) if path.is_file() else None


def result_paths(results: Path) -> list[Path]:
    """Every result.json under `results`, leaving out the report's own output folders."""
    if not results.is_dir():
        return []
    return [p for p in find_results(results) if not OUTPUT_DIRS & set(p.relative_to(results).parts[:1])]


def load_cells(results: Path, preset: str) -> list[CellResult]:
    """The results of `preset` under `results`/<preset>, in display order (task, method, seed)."""
    cells = [CellResult(p, json.loads(p.read_text())) for p in result_paths(results / preset)]
    cells = [c for c in cells if c.doc["cell"]["preset"] == preset]
    tasks, methods = order({c.task for c in cells}, TASK_ORDER), order({c.method for c in cells}, METHOD_ORDER)
    return sorted(cells, key=lambda c: (tasks.index(c.task), methods.index(c.method), c.seed))


def find_presets(results: Path) -> list[str]:
    return sorted({json.loads(p.read_text())["cell"]["preset"] for p in result_paths(results)})


def expected_cells(preset: str, cells: list[CellResult]) -> set[Cell]:
    """The cells the preset's recipe defines: its tasks x methods (base once per task, at seed 0), over the
    recipe's seeds and every seed a trained cell was run with (a run's --seeds are not recorded in the recipe).
    The recipe is the one stored with the results (what was run), else the preset's file; with neither, the
    tasks and methods that have results."""
    recipes = {json.dumps(r, sort_keys=True): r for c in cells
               if (r := c.doc.get("provenance", {}).get("recipe")) and r.get("tasks") is not None}
    tasks = {c.task for c in cells}
    methods = {c.method for c in cells}
    seeds: set[int] = set()
    own_seeds: dict[str, set[int]] = {}          # recipe `method_seeds`: methods that run their own seeds
    if recipes:
        for r in recipes.values():
            tasks |= set(r["tasks"])
            methods |= set(r.get("methods") or [])
            seeds |= set(r.get("seeds") or [])
            for m, s in (r.get("method_seeds") or {}).items():
                own_seeds.setdefault(m, set()).update(s)
    else:
        try:
            r = load_recipe(preset)
            tasks |= set(r.tasks)
            methods |= set(r.methods)
            seeds |= set(r.seeds)
            own_seeds = {m: set(s) for m, s in r.method_seeds.items()}
        except (FileNotFoundError, ValueError):
            pass
    seeds |= {c.seed for c in cells if c.method != "base" and c.method not in own_seeds}
    out = {Cell(preset, t, "base", BASE_SEED) for t in tasks if "base" in methods}
    # a method's own seeds, plus any seed it has results for (a run's --seeds are not recorded in the recipe)
    return out | {Cell(preset, t, m, s) for t in tasks for m in methods if m != "base"
                  for s in (own_seeds[m] | {c.seed for c in cells if c.method == m} if m in own_seeds else seeds)}


class Grid:
    """The cells of one preset, indexed the ways the tables need; ``missing`` lists the cells the preset's
    recipe defines that have no result here (a partial run), in display order."""

    def __init__(self, preset: str, cells: list[CellResult], ref: dict) -> None:
        self.preset, self.cells, self.ref = preset, cells, ref
        self.tasks = order({c.task for c in cells}, TASK_ORDER)
        self.methods = order({c.method for c in cells}, METHOD_ORDER)
        self.eval_tasks = order({t for c in cells for t in c.doc["cross_task"]}, TASK_ORDER)
        self.benches = order({b for c in cells for b in (c.doc["generalization"] or {}).get("primary_metric", {})},
                             BENCH_ORDER)

    @cached_property
    def missing(self) -> list[Cell]:
        have = {c.cell for c in self.cells}
        todo = expected_cells(self.preset, self.cells) - have
        tasks = order({c.task for c in todo}, TASK_ORDER)
        methods = order({c.method for c in todo}, METHOD_ORDER)
        return sorted(todo, key=lambda c: (tasks.index(c.task), methods.index(c.method), c.seed))

    def group(self, task: str, method: str) -> list[CellResult]:
        return [c for c in self.cells if c.task == task and c.method == method]

    def base(self, task: str) -> CellResult | None:
        """The base cell of a task (one deterministic run); any base cell if that task has none."""
        own = self.group(task, "base")
        anyb = [c for c in self.cells if c.method == "base"]
        return (own or anyb or [None])[0]

    def tuned_rows(self) -> list[tuple[str, str, list[CellResult]]]:
        return [(t, m, self.group(t, m)) for t in self.tasks for m in self.methods
                if m != "base" and self.group(t, m)]

"""What the tables measure, read from the result records: per-item scores (seeds are replicates, averaged per item;
items are the sampling unit), a cell's metric values, the headline metric and benchmarks, training cost and the
candidates' log-probabilities."""
from __future__ import annotations

from evals.stats import seed_means
from repro.driver.recipes import headline_benchmarks, headline_metric, load_recipe
from repro.report.formatting import mean
from repro.report.load import CellResult, Grid

BOOT_SEED = 0   # every bootstrap in the tables uses this seed, so tables are reproducible

ITEM_FIELD = {"acc": "correct", "em": "em", "f1": "f1", "containment": "contains"}
METRIC_LABEL = {"acc": "accuracy (judge)", "em": "EM (official SQuAD)", "f1": "F1 (official SQuAD)",
                "containment": "containment (gold alias in answer)"}
BINARY_METRICS = {"acc", "em", "containment"}


def cell_metric(cell: CellResult, metric: str) -> float | None:
    """A cell's in-domain value of a metric: the judge's accuracy, or a reading metric (None if not recorded)."""
    if metric == "acc":
        return cell.acc
    reading = cell.doc["in_domain"].get("reading") or cell.doc["cross_task"][cell.task].get("reading") or {}
    return reading.get(metric)


def judge_kind(g: Grid, task: str) -> str:
    """The judge every cell used on `task` ('' when they differ or none says)."""
    kinds = {c.doc["cross_task"][task]["task"].get("judge", "") for c in g.cells if task in c.doc["cross_task"]}
    return kinds.pop() if len(kinds) == 1 else ""


def task_scores(cell: CellResult, task: str, metric: str) -> dict[str, float]:
    """item id -> the metric's per-item score on a task (reading metrics exist once a cell is re-scored)."""
    field_ = ITEM_FIELD[metric]
    recs = [it for it in cell.items if it["kind"] == "task" and it["task"] == task]
    missing = [it["id"] for it in recs if field_ not in it]
    if missing:
        raise ValueError(f"{cell.path}: task {task} items lack {field_!r} (e.g. {missing[0]}): run "
                         f"python -m repro rescore {cell.path.parent} --data-dir DATA")
    return {it["id"]: float(it[field_]) for it in recs}


def task_clusters(cells: list[CellResult], task: str) -> dict[str, str] | None:
    """item id -> its passage, where the items record one (SQuAD); None when items are independent."""
    out = {it["id"]: it["cluster"] for c in cells for it in c.items
           if it["kind"] == "task" and it["task"] == task and "cluster" in it}
    return out or None


def task_headline_metric(g: Grid, task: str) -> str:
    """The task's headline metric: stored with the cells (new runs, re-scored cells), else the preset's recipe."""
    stored = {c.doc["cross_task"].get(task, {}).get("headline_metric") for c in g.cells if task in c.doc["cross_task"]}
    stored.discard(None)
    if len(stored) == 1:
        return stored.pop()
    try:
        return headline_metric(load_recipe(g.preset).tasks.get(task))
    except FileNotFoundError:
        return "acc"


def headline_benches(g: Grid) -> list[str]:
    """The paper's four benchmarks among ours, in display order: the recipe's evaluation.headline_benchmarks as
    stored with the cells (the first cell that records it), else the registry's headline flags."""
    given = next((h for c in g.cells if (h := c.doc["provenance"].get("recipe", {}).get("evaluation", {})
                                         .get("headline_benchmarks")) is not None), None)
    names = headline_benchmarks({"benchmarks": g.benches, "headline_benchmarks": given})
    return [b for b in g.benches if b in names]


def bench_seed_means(cells: list[CellResult], bench: str,
                     field_: str | None = None) -> tuple[dict[str, float], int | None]:
    """(item -> mean over the cells' seeds, seeds if the per-seed scores are 0/1 else None)."""
    per = [c.bench_scores(bench) if field_ is None else c.bench_field(bench, field_) for c in cells]
    binary = all(v in (0.0, 1.0) for d in per for v in d.values())
    return seed_means(per), (len(per) if binary else None)


def paper_four_drop(cell: CellResult, base: CellResult, benches: list[str]) -> float:
    """One cell's paper-four average drop in the paper's sign (base − tuned), from its items."""
    drops = []
    for b in benches:
        t, z = cell.bench_scores(b), base.bench_scores(b)
        keys = sorted(set(t) & set(z))
        drops.append(sum(z[k] - t[k] for k in keys) / len(keys))
    return sum(drops) / len(drops)


def train_cost(cells: list[CellResult]) -> str:
    """Trained tokens and optimiser steps (mean over seeds): methods that train on fewer tokens move the model less."""
    tr = [c.doc.get("training") or {} for c in cells]
    tok = [t["trained_tokens"] for t in tr if t.get("trained_tokens") is not None]
    steps = [t.get("total_steps", len(t.get("steps") or [])) for t in tr if not t.get("skipped")]
    if not tok:
        return "—"
    return f"{mean(tok):g} tok / {mean(steps):g} steps"


def candidate_logps(g: Grid, task: str) -> dict[str, dict[str, dict]]:
    """id -> source -> {"logp": {...}, "accepted": bool} for one task's training examples, merged over the
    methods' cells of the lowest seed (candidates come from one shared cache, so a source's text, verdict and log p
    are the same in every method that has it: S3FT paraphrases only where its own answer failed, SDFT everywhere)."""
    merged: dict[str, dict[str, dict]] = {}
    for m in g.methods:
        cells = g.group(task, m)
        if not cells:
            continue
        for it in cells[0].candidates():
            for s, lp in it.get("logp", {}).items():
                merged.setdefault(it["id"], {}).setdefault(
                    s, {"logp": lp, "accepted": bool(it.get("accepted", {}).get(s, s == "gold"))})
    return merged

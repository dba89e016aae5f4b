"""Re-score committed cells from their stored responses: the reading metrics (official SQuAD v1.1 EM and F1,
containment, answer length in words) and each item's passage (the cluster the comparisons resample), for every
reading task a cell was evaluated on; and the headline metric the preset's recipe names for each task.

Nothing is generated and the judge's verdicts are left as they are (the regression tests re-judge them): only
numbers computed from the stored responses are added. The cell's provenance keeps its original commit and date and
gains a ``rescored`` record (command, commit, date, what changed). Idempotent: a second run changes nothing.

    python -m repro rescore results/mini --data-dir ../shared/data
"""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from pathlib import Path

from evals.indomain import item_extras, summarise_reading
from evals.tasks import get_task
from repro.driver.recipes import headline_metric, load_recipe
from repro.driver.schema import find_results
from repro.runtime.provenance import git_info
from repro.runtime.store import atomic_write_bytes, atomic_write_json, jsonl_bytes


def _recipe_tasks(preset: str, stored: dict) -> dict:
    """The preset's task settings now (its headline metrics), else those stored with the cell."""

    try:
        return load_recipe(preset).tasks
    except FileNotFoundError:
        return stored.get("tasks", {})


def rescore_result(path: Path, data_dir: Path | None, *, splits: dict) -> bool:
    """Re-score one result.json in place; returns whether anything changed."""

    doc = json.loads(path.read_text())
    items_path = path.parent / doc["items"]["path"]
    with gzip.open(items_path, "rt", encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    tasks = _recipe_tasks(doc["cell"]["preset"], doc["provenance"].get("recipe", {}))
    changed: list[tuple[str, str]] = []
    for name, score in doc["cross_task"].items():
        metric = headline_metric(tasks.get(name))
        if score.get("headline_metric") != metric:
            score["headline_metric"] = metric
            changed.append((name, "headline"))
        task = get_task(name, **({"judge": score["task"]["judge"]} if "judge" in score["task"] else {}))
        key = (name, score["task"].get("judge", ""))
        if key not in splits:
            splits[key] = {ex["id"]: ex for ex in task.load_split("test", data_dir).examples}
        recs = [it for it in items if it["kind"] == "task" and it["task"] == name]
        for it in recs:
            if it["id"] not in splits[key]:
                raise ValueError(f"{path}: item {it['id']} of task {name} is not in its test split")
            extra = item_extras(task, splits[key][it["id"]], it["response"])
            if any(it.get(k) != v for k, v in extra.items()):
                it.update(extra)
                changed.append((name, "item"))
        reading = summarise_reading(recs)
        if reading is not None and score.get("reading") != reading:
            score["reading"] = reading
            changed.append((name, "reading"))
    if not changed:
        return False
    doc["in_domain"] = {**doc["in_domain"], **{k: doc["cross_task"][doc["cell"]["task"]][k]
                                               for k in ("headline_metric", "reading")
                                               if k in doc["cross_task"][doc["cell"]["task"]]}}
    data = jsonl_bytes(items, compress=True)
    atomic_write_bytes(items_path, data)
    doc["items"]["sha256"] = hashlib.sha256(data).hexdigest()
    git = git_info()
    doc["provenance"]["rescored"] = {
        "command": "python -m repro rescore", "git_hash": git["git_hash"], "git_dirty": git["git_dirty"],
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "what": sorted({f"{task}:{part}" for task, part in changed}),   # headline metric, item metrics, reading
        "note": "reading metrics and passages computed from the stored responses; verdicts, scores and the "
                "original provenance unchanged"}
    atomic_write_json(path, doc)
    return True


def rescore(paths: list[Path], data_dir: Path | None) -> tuple[int, int]:
    files = [p for root in paths for p in find_results(root)
             if not {"tables", "figures"} & set(p.relative_to(root).parts if root.is_dir() else ())]
    splits: dict = {}
    n_changed = sum(rescore_result(p, data_dir, splits=splits) for p in files)
    return n_changed, len(files)

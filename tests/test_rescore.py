"""`python -m repro rescore`: reading metrics from stored responses (committed cells are up to date; an old cell
without them gets exactly what the committed one holds), and recipe validation of headline metrics."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from repro.driver.rescore import rescore
from repro.driver.schema import validate_result

REPO = Path(__file__).resolve().parents[1]
CELL = REPO / "results" / "mini" / "squad" / "sft" / "seed0"


def _items(folder: Path) -> list[dict]:
    with gzip.open(folder / "items.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.skipif(not CELL.is_dir(), reason="no committed mini SQuAD cell")
def test_rescore_restores_reading_metrics(tmp_path: Path, data_dir: Path) -> None:
    cell = tmp_path / "mini" / "squad" / "sft" / "seed0"
    shutil.copytree(CELL, cell)
    assert rescore([tmp_path], data_dir) == (0, 1)   # the committed cell is up to date: nothing to re-score
    # make it an old cell: no reading metrics, no passages, no headline metric
    doc = json.loads((cell / "result.json").read_text())
    for part in (doc["in_domain"], doc["cross_task"]["squad"]):
        part.pop("reading"), part.pop("headline_metric")
    doc["provenance"].pop("rescored", None)         # present only where an older cell was re-scored
    items = [{k: v for k, v in it.items() if k not in ("em", "f1", "contains", "answer_words", "cluster")}
             for it in _items(cell)]
    import hashlib  # noqa: PLC0415

    from repro.runtime.store import jsonl_bytes  # noqa: PLC0415

    data = jsonl_bytes(items, compress=True)
    (cell / "items.jsonl.gz").write_bytes(data)
    doc["items"]["sha256"] = hashlib.sha256(data).hexdigest()
    (cell / "result.json").write_text(json.dumps(doc))
    assert rescore([tmp_path], data_dir) == (1, 1)
    assert validate_result(cell / "result.json") == []
    new, old = json.loads((cell / "result.json").read_text()), json.loads((CELL / "result.json").read_text())
    assert new["in_domain"]["reading"] == old["in_domain"]["reading"]
    assert new["in_domain"]["headline_metric"] == "f1"
    assert (cell / "items.jsonl.gz").read_bytes() == (CELL / "items.jsonl.gz").read_bytes()
    reading = new["in_domain"]["reading"]
    recs = [it for it in _items(cell) if it["kind"] == "task"]
    assert reading["containment"] == pytest.approx(sum(it["correct"] for it in recs) / len(recs))   # = the judge
    assert reading["f1"] == pytest.approx(sum(it["f1"] for it in recs) / len(recs))
    assert {it["cluster"] for it in recs} and all(it["cluster"] for it in recs)


def test_recipe_headline_metric_is_validated() -> None:
    from repro.driver.recipes import load_recipe  # noqa: PLC0415

    assert load_recipe("mini").tasks["squad"]["headline_metric"] == "f1"
    with pytest.raises(ValueError, match="headline_metric"):
        load_recipe("mini", ["tasks.gsm8k.headline_metric=f1"])
    with pytest.raises(ValueError, match="judge_model needs judge: llm"):
        load_recipe("mini", ["tasks.squad.judge_model=tiny"])
    with pytest.raises(ValueError, match="headline_benchmarks"):
        load_recipe("mini", ["evaluation.headline_benchmarks=[mmlu_5shot]"])

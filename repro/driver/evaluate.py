"""One model (+ adapter) evaluated outside a grid - the `eval` verb: the same evaluation a cell runs, written as
one schema-checked result file with its items beside it."""
from __future__ import annotations

import hashlib
from pathlib import Path

from repro.driver.cell import Cell, CellRunner
from repro.driver.results import assemble_result
from repro.runtime.store import atomic_write_bytes, atomic_write_json, jsonl_bytes


def evaluate_model(runner: CellRunner, adapter: Path | None, out: Path) -> dict:
    """Evaluate the recipe's model (with `adapter`: base and adapted, and the drops) on the recipe's tasks and
    benchmarks; write the result to `out` and its items to ``<out stem>.items.jsonl.gz``; return the result."""
    method = "base" if adapter is None else "external-adapter"
    cell = Cell(runner.recipe.name, next(iter(runner.recipe.tasks)), method, 0)
    for t in runner.recipe.tasks:                    # provenance needs the loaded splits
        runner.examples(t, "test")
    ev = runner.evaluate(cell, adapter)
    result, items = assemble_result(runner, cell, None, False, None, ev)
    data = jsonl_bytes(items, compress=True)
    items_path = out.with_name(out.stem + ".items.jsonl.gz")
    atomic_write_bytes(items_path, data)
    result["items"].update(path=items_path.name, sha256=hashlib.sha256(data).hexdigest())
    atomic_write_json(out, result)
    return result

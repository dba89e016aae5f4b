"""The results schema and its check (``python -m repro validate``)."""
from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import jsonschema

from methods.registry import get_method, method_ids

SCHEMA_VERSION = "s3ft-bench/result-v1"
SCHEMA_PATH = Path(__file__).with_name("result.schema.json")


@cache
def _validator():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_result(path: str | Path) -> list[str]:
    """Problems with one result file (empty when it is valid): JSON, schema, and the items file it points to."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return [f"{path}: not readable JSON ({e})"]
    problems = []
    for err in sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        problems.append(f"{path}: {where}: {err.message}")
    if problems:
        return problems
    items = path.parent / doc["items"]["path"]
    if not items.is_file():
        return [f"{path}: items file {items} is missing"]
    digest = hashlib.sha256(items.read_bytes()).hexdigest()
    if digest != doc["items"]["sha256"]:
        problems.append(f"{path}: items file {items.name} sha256 {digest[:12]}... does not match the result's "
                        f"{doc['items']['sha256'][:12]}...")
    audit = doc.get("targets_audit")
    if audit:
        afile = path.parent / audit["path"]
        if not afile.is_file():
            problems.append(f"{path}: targets audit file {afile} is missing")
        elif hashlib.sha256(afile.read_bytes()).hexdigest() != audit["sha256"]:
            problems.append(f"{path}: targets audit file {afile.name} does not match the result's sha256")
    if doc["cell"]["task"] != doc["in_domain"]["task"]["task"]:
        problems.append(f"{path}: in_domain is for task {doc['in_domain']['task']['task']}, cell is "
                        f"{doc['cell']['task']}")

    method = doc["cell"]["method"]
    trains = method in method_ids() and get_method(method).trains
    for key in ("training", "targets", "forgetting_signal"):
        skipped = key != "targets" and (doc["training"] or {}).get("skipped")
        if trains and doc[key] is None and not skipped:
            problems.append(f"{path}: {key} is null but method {doc['cell']['method']} trains")
    return problems


def find_results(root: str | Path) -> list[Path]:
    root = Path(root)
    return [root] if root.is_file() else sorted(root.rglob("result.json"))

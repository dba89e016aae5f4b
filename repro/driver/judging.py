"""Judging outside a grid: a JSONL of responses scored by a task's judge (the `judge` verb), and the sandbox check
every command that may run generated code makes before it starts any work.

Input lines carry ``response`` and either ``id`` (an example of the task, looked up in its splits) or the gold
fields inline (the task's ``inline_example`` says which). Every malformed line is a ``DataError`` naming the file,
the line and the field.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from evals.data import DataError, parse_json_line, read_text_file, resolve_data_dir
from evals.judges import sandbox
from evals.judges.llm import LLMJudge
from evals.tasks import get_task
from evals.tasks.base import Task
from evals.tasks.from_file import is_task_file
from repro.runtime.cache import GenerationCache
from repro.runtime.generate import make_generator


def require_sandbox(tasks: Iterable[str], specs: Mapping[str, dict] | None = None) -> None:
    """Code-judged tasks (MBPP, a YAML task with a `code` judge) refuse to start without a sandbox before any
    work, not hours into a grid. `specs`: the recipe's task settings, where a task's `file` names its YAML."""
    def runs_code(name: str) -> bool:
        target = ((specs or {}).get(name) or {}).get("file") or name
        return target == "mbpp" or (is_task_file(target) and getattr(get_task(target), "judge_kind", "") == "code")

    if any(runs_code(t) for t in set(tasks)):
        sandbox.require()


def judge_task(name: str, judge: str | None = None) -> Task:
    """The task whose judge scores the file (`judge`: a reading task's judge kind); a task that runs code first
    checks that a sandbox is there."""
    require_sandbox([name])
    return get_task(name, **({"judge": judge} if judge else {}))


def llm_judge_model(task: Task, requested: str | None) -> str | None:
    """The model an LLM judge runs: the one asked for, else the one a YAML task names (``base`` there means the
    model under evaluation, which a file of responses does not have)."""
    spec_model = getattr(task, "judge_model", None)
    return requested or (spec_model if spec_model not in (None, "base") else None)


def use_llm_judge(task: Task, judge_model: str, cache_dir: Path) -> None:
    """Give `task` an LLM judge on `judge_model`, its generations cached in `cache_dir`."""
    task.use_llm_judge(LLMJudge(make_generator(judge_model, cache=GenerationCache(cache_dir))))


def read_predictions(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed JSON) of each non-blank line of `path`."""
    text = read_text_file(path, "predictions file")
    rows = [(lineno, parse_json_line(line, f"{path}:{lineno}"))
            for lineno, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not rows:
        raise DataError(f"{path}: no predictions (the file is empty); write one JSON object per line with "
                        "'response' and 'id' or the gold fields")
    return rows


@dataclass
class Judged:
    rows: list[dict]     # one per input line, in order: its id (when given), its line number and the verdict
    accuracy: float      # share of correct verdicts (0.0 for an empty file)
    n: int


def judge_predictions(task: Task, rows: list[tuple[int, object]], path: Path, *, data_dir: str | None = None,
                      progress: bool = True) -> Judged:
    """Judge `rows` (from ``read_predictions(path)``). `data_dir`: the ``--data-dir`` value (None:
    ``$S3FT_DATA_DIR`` or the hub), resolved only when a row names an example by id."""
    by_id = None
    examples, responses = [], []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        if not isinstance(row, dict) or not isinstance(row.get("response"), str):
            raise DataError(f"{where}: field 'response' is missing or not a string")
        if "id" in row:
            if not isinstance(row["id"], str):
                raise DataError(f"{where}: field 'id' must be str, got {type(row['id']).__name__}")
            if by_id is None:
                resolved = resolve_data_dir(data_dir)
                by_id = {ex["id"]: ex for split in task.splits for ex in task.load_split(split, resolved).examples}
            if row["id"] not in by_id:
                raise DataError(f"{where}: field 'id': {row['id']!r} is not an example of task {task.name}")
            examples.append(by_id[row["id"]])
        else:
            examples.append(task.inline_example({k: v for k, v in row.items() if k != "response"}, where))
        responses.append(row["response"])
    verdicts = task.judge_many(examples, responses, progress=progress)
    out_rows = [{**({"id": r["id"]} if "id" in r else {}), "line": lineno, **v.to_dict()}
                for (lineno, r), v in zip(rows, verdicts)]
    n = len(verdicts)
    return Judged(out_rows, sum(v.correct for v in verdicts) / n if n else 0.0, n)

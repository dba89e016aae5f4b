"""Targets for any trainer: a method's targets.jsonl written as the chat datasets other training stacks read.

Formats (one JSON object per line; every row keeps its example id and target source in ``metadata``):
  messages           {"messages": [system?, user, {"role": "assistant", ...}], "metadata": {...}}
                     TRL's SFTTrainer (conversational), any HF chat template (tokenizer.apply_chat_template)
  prompt_completion  {"prompt": [system?, user], "completion": [{"role": "assistant", ...}], "metadata": {...}}
                     TRL's SFTTrainer with loss on the completion only (what the suite's own core trains)
  alpaca             {"instruction", "input": "", "output", "system", "history": [[user, assistant], ...], ...}
                     LLaMA-Factory (formatting: alpaca), axolotl (type: alpaca)
  sharegpt           {"conversations": [{"from": "system"|"human"|"gpt", "value"}], "metadata": {...}}
                     LLaMA-Factory (formatting: sharegpt), axolotl (type: chat_template with field_messages:
                     conversations and the sharegpt role mapping)
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from repro.runtime.store import atomic_write_jsonl

if TYPE_CHECKING:
    from repro.driver.cell import Cell, CellRunner

FORMATS = ("messages", "prompt_completion", "alpaca", "sharegpt")
_SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}


def _metadata(rec: dict, extra: dict) -> dict:
    return {"id": rec["id"], "source": rec["source"], **extra}


def to_row(rec: dict, fmt: str, extra: dict | None = None) -> dict:
    """One targets.jsonl record (id, prompt: chat messages, target, source) in format `fmt`."""
    extra = extra or {}
    prompt = [dict(m) for m in rec["prompt"]]
    answer = {"role": "assistant", "content": rec["target"]}
    meta = _metadata(rec, extra)
    if fmt == "messages":
        return {"messages": prompt + [answer], "metadata": meta}
    if fmt == "prompt_completion":
        return {"prompt": prompt, "completion": [answer], "metadata": meta}
    if fmt == "sharegpt":
        return {"conversations": [{"from": _SHAREGPT_ROLE[m["role"]], "value": m["content"]}
                                  for m in prompt + [answer]], "metadata": meta}
    if fmt == "alpaca":
        system = "\n\n".join(m["content"] for m in prompt if m["role"] == "system")
        turns = [m for m in prompt if m["role"] != "system"]
        if not turns or turns[-1]["role"] != "user":
            raise ValueError(f"{rec['id']}: the prompt must end with a user turn for the alpaca format")
        history, pending = [], None
        for m in turns[:-1]:                   # earlier (user, assistant) exchanges, as LLaMA-Factory's history
            if m["role"] == "user":
                pending = m["content"]
            else:
                history.append([pending or "", m["content"]])
                pending = None
        return {"instruction": turns[-1]["content"], "input": "", "output": rec["target"], "system": system,
                "history": history, "metadata": meta}
    raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")


def export_targets(targets_jsonl: Path, fmt: str, out: Path, extra: dict | None = None) -> int:
    """Write `targets_jsonl` as `out` in format `fmt`; returns the number of rows."""
    rows = [to_row(rec, fmt, extra) for rec in _read(targets_jsonl)]
    atomic_write_jsonl(out, rows)
    return len(rows)


def export_cell_targets(runner: CellRunner, cell: Cell, formats: Sequence[str],
                        folder: Path | None = None) -> list[tuple[str, int, Path]]:
    """Export a built cell's targets in each of `formats` (``all``: every format) as
    ``<folder>/<task>.<method>.<format>.jsonl`` (default folder: the targets folder); returns (format, rows, path)
    of each file. Each row's metadata names the task, method, model and task template version."""
    targets = runner.paths(cell)["targets"]
    folder = folder or targets
    meta = {"task": cell.task, "method": cell.method, "model": runner.recipe.model,
            "template_version": runner.task(cell.task).template_version}
    written = []
    for fmt in (FORMATS if "all" in formats else formats):
        path = folder / f"{cell.task}.{cell.method}.{fmt}.jsonl"
        written.append((fmt, export_targets(targets / "targets.jsonl", fmt, path, meta), path))
    return written


def _read(path: Path) -> Iterable[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)

"""NQ-open: closed-book questions from Natural Questions with short gold aliases (the paper's reading task "NQ").

Offline split (documented): test = NQ-open dev (3,610 = the hub's nq_open validation, so offline and online test
sets are identical); train = EfficientQA dev + test (1,800 + 1,769 = 3,569 questions drawn from the same NQ
distribution; checked: no question overlaps the test set). Online: train = the hub's train split.
Ids: ``nq_open/<sha256(question)[:12]>``, stable whichever file a question comes from.
"""
from __future__ import annotations

from pathlib import Path

from evals.data import Field, LoadedRows, Source, load_source, stable_hash
from evals.tasks.base import Split, user
from evals.tasks.reading import ReadingTask

_FIELDS = (Field("question", str, nonempty=True), Field("answer", list, item=str, nonempty=True))
_TEST = Source("nq_open/NQ-open.dev.jsonl", ("google-research-datasets/nq_open", None, "validation"), _FIELDS)
_TRAIN_LOCAL = (Source("nq_open/NQ-open.efficientqa.dev.1.1.jsonl", None, _FIELDS),
                Source("nq_open/NQ-open.efficientqa.test.1.1.jsonl", None, _FIELDS))
_TRAIN_HUB = Source("nq_open/train", ("google-research-datasets/nq_open", None, "train"), _FIELDS)

PREDICT = "Answer the following question with a short answer.\n\nQuestion: {question}?"


class NQOpen(ReadingTask):
    name = "nq_open"
    description = "NQ-open closed-book QA (the paper's NQ); judge: normalised match/containment (or --judge llm)"
    template_version = "nq_open-v1"

    def load_split(self, split: str, data_dir: Path | None) -> Split:
        if split == "test":
            parts: dict[str, LoadedRows] = {"test": load_source(_TEST, data_dir)}
        elif data_dir is not None:
            parts = {s.local.split("/")[-1]: load_source(s, data_dir) for s in _TRAIN_LOCAL}
        else:
            parts = {"train": load_source(_TRAIN_HUB, None)}
        examples = [{"id": f"nq_open/{stable_hash(r['question'])}", "question": r["question"], "answers": r["answer"]}
                    for lr in parts.values() for r in lr.rows]
        return Split(examples, parts)

    def predict_messages(self, ex: dict) -> list[dict]:
        return user(PREDICT.format(question=ex["question"].rstrip("?")))

    def question_text(self, ex: dict) -> str:
        return ex["question"]

    def inline_example(self, row: dict, where: str) -> dict:
        ex = super().inline_example(row, where)
        ex.setdefault("question", "")
        return ex

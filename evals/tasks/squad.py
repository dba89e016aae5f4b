"""SQuAD v1.1, passage-grounded reading comprehension: answerable by small models, so it carries the reading task
of the small presets (the paper's NQ is closed-book and near zero for a 135M model; see models.md).

Offline split (documented): the 1,000-question OLMES subset of SQuAD validation, split by passage title with a seeded
hash, about half the titles to test; no title straddles the split, so test passages are never seen in training.
Online: train = the hub's train split; test = hub validation restricted to the same title group.
Ids: ``squad/<SQuAD id>``.
"""
from __future__ import annotations

import re
from pathlib import Path

from evals.data import DataError, Field, Source, group_split, load_source
from evals.tasks.base import Split, user
from evals.tasks.reading import ReadingTask

SPLIT_SEED = 1234
TEST_FRACTION = 0.5
_SCHEMA = (Field("id", str), Field("title", str), Field("context", str, nonempty=True),
           Field("question", str, nonempty=True), Field("answers", list, item=str, nonempty=True))
_QUERY = re.compile(r"\ATitle: (?P<title>.*?)\nBackground: (?P<context>.*)\nQuestion: (?P<question>.*?)\nAnswer:\s*\Z",
                    re.DOTALL)


def _from_olmes(row: dict, where: str) -> dict:
    m = _QUERY.match(row["query"])
    if not m:
        raise DataError(f"{where}: field 'query' is not 'Title: ...\\nBackground: ...\\nQuestion: ...\\nAnswer:'")
    return {"id": row["id"], "title": m["title"], "context": m["context"], "question": m["question"],
            "answers": row["answers_text"]}


def _from_hub(row: dict) -> dict:
    return {"id": row["id"], "title": row["title"], "context": row["context"], "question": row["question"],
            "answers": list(row["answers"]["text"])}


_LOCAL = Source("squad/validation_subset1000.jsonl", None,
                (Field("id", str), Field("query", str), Field("answers_text", list, item=str, nonempty=True)))

PREDICT = ("Read the passage and answer the question with a short answer.\n\nTitle: {title}\nPassage: {context}\n\n"
           "Question: {question}")


class SQuAD(ReadingTask):
    name = "squad"
    description = "SQuAD v1.1 passage-grounded QA; judge: normalised match/containment (or --judge llm)"
    template_version = "squad-v1"

    def load_split(self, split: str, data_dir: Path | None) -> Split:
        if data_dir is not None:
            loaded = load_source(_LOCAL, data_dir)
            rows = [_from_olmes(r, f"{data_dir / _LOCAL.local}:{i + 1}") for i, r in enumerate(loaded.rows)]
            train, test = group_split(rows, lambda r: r["title"], TEST_FRACTION, SPLIT_SEED)
            chosen, sources = (train if split == "train" else test), {"squad": loaded}
        else:
            hub_split = "train" if split == "train" else "validation"
            src = Source(_LOCAL.local, ("rajpurkar/squad", None, hub_split), _SCHEMA, from_hub=_from_hub)
            loaded = load_source(src, None)
            chosen = loaded.rows if split == "train" else group_split(loaded.rows, lambda r: r["title"],
                                                                      TEST_FRACTION, SPLIT_SEED)[1]
            sources = {split: loaded}
        return Split([{**r, "id": f"squad/{r['id']}"} for r in chosen], sources)

    def predict_messages(self, ex: dict) -> list[dict]:
        return user(PREDICT.format(title=ex["title"].replace("_", " "), context=ex["context"],
                                   question=ex["question"]))

    def cluster(self, ex: dict) -> str | None:
        return ex["title"]

    def question_text(self, ex: dict) -> str:
        return ex["question"]

"""What every in-domain task provides: data splits with stable ids, versioned prompts, a gold response and a judge.

A task file subclasses `Task`, fills in its prompts and judge, and registers itself in `evals.tasks.TASKS`.
Examples are plain dicts: the task's dataset schema plus a stable string ``id``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evals.data import DataError, Field, LoadedRows, check_row, seeded_subset
from evals.judges import Verdict

Message = dict[str, str]


@dataclass
class Split:
    """One loaded split: its examples and where they came from (for provenance)."""

    examples: list[dict]
    sources: dict[str, LoadedRows]

    def provenance(self) -> dict:
        return {name: {"origin": lr.origin, "sha256": lr.sha256, "rows": len(lr.rows)}
                for name, lr in self.sources.items()}


class Task(ABC):
    """Base class of in-domain tasks. Subclasses set the class attributes and implement the abstract methods: a
    subclass that misses one cannot be instantiated (TypeError when the task is built, not half-way into a run)."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: Bump when any prompt text changes: it is part of every cache key and recorded with every result.
    template_version: ClassVar[str]
    #: Version of the paraphrase prompt alone (its cache tag), so rewording it leaves cached predictions valid.
    #: None = the task's template_version.
    paraphrase_version: ClassVar[str | None] = None
    judge_version: ClassVar[str]
    #: Version of `paraphrase_invalid`'s rules (evals.judges.validity); part of the target-stage hash.
    validity_version: ClassVar[str] = "judge-only-v1"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    #: Fields an input line of ``repro judge`` may carry instead of an ``id``.
    inline_fields: ClassVar[tuple[Field, ...]] = ()
    max_new_tokens: ClassVar[int] = 256
    paraphrase_max_new_tokens: ClassVar[int] = 384
    #: Stop strings for generation beyond the model's own end-of-turn token.
    stop: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        if options:
            raise DataError(f"task {self.name} takes no options ({', '.join(sorted(options))}); --judge is for the "
                            "reading tasks squad and nq_open")

    # --- data ------------------------------------------------------------------------------------------------
    @abstractmethod
    def load_split(self, split: str, data_dir: Path | None) -> Split:
        """Every example of `split` with a stable string ``id``, and the files/hub rows it was read from."""

    def load(self, split: str, data_dir: Path | None, *, limit: int | None = None, seed: int = 0) -> list[dict]:
        """Examples of a split; `limit` takes a seeded subset (same seed, same subset) in original order."""
        if split not in self.splits:
            raise ValueError(f"task {self.name} has splits {self.splits}, not {split!r}")
        return seeded_subset(self.load_split(split, data_dir).examples, limit, seed)

    def inline_example(self, row: dict, where: str) -> dict:
        """An example built from gold fields given inline (``repro judge`` input without an id)."""
        return dict(check_row(row, self.inline_fields, where))

    # --- prompts ---------------------------------------------------------------------------------------------
    @abstractmethod
    def predict_messages(self, ex: dict) -> list[Message]:
        """The chat prompt the model answers (prediction, evaluation, and by default training)."""

    def train_messages(self, ex: dict) -> list[Message]:
        """The prompt a training target is attached to. Same as the prediction prompt (documented choice: the
        paper shows one figure for GSM8K train/predict), so own answers are trained in the context they came from."""
        return self.predict_messages(ex)

    @abstractmethod
    def paraphrase_messages(self, ex: dict) -> list[Message]:
        """The chat prompt asking the model to restate the gold response in its own words (SDFT, S3FT)."""

    @abstractmethod
    def gold_response(self, ex: dict) -> str:
        """The reference response of `ex`, as a training target."""

    def item_metrics(self, ex: dict, response: str) -> dict[str, float]:
        """Per-item metrics reported beside the judge's verdict (reading tasks: official EM/F1, containment,
        answer length). Empty for tasks whose judge is the field's metric."""
        return {}

    def cluster(self, ex: dict) -> str | None:
        """The group an item shares with others (SQuAD: its passage title): comparisons resample and permute
        whole clusters, since items on one passage are not independent. None = items are independent."""
        return None

    @property
    def predict_tag(self) -> str:
        """Cache tag of the prediction prompt: shared by target building (train split), evaluation (test split)
        and the forgetting signal, so all three reuse one cached set of base-model answers."""
        return f"{self.name}.predict.{self.template_version}"

    @property
    def paraphrase_tag(self) -> str:
        return f"{self.name}.paraphrase.{self.paraphrase_version or self.template_version}"

    def paraphrase_invalid(self, ex: dict, text: str, verdict: Verdict) -> str | None:
        """Why a judge-accepted paraphrase is still not a usable training target of this task (a short reason), or
        None. The default (reading tasks): the judge's acceptance is the whole check."""
        return None

    def question_text(self, ex: dict) -> str:
        """The question as shown to an LLM judge."""
        return self.predict_messages(ex)[-1]["content"]

    def gold_text(self, ex: dict) -> str:
        return self.gold_response(ex)

    # --- judging ---------------------------------------------------------------------------------------------
    @abstractmethod
    def judge(self, ex: dict, response: str) -> Verdict:
        """Whether `response` answers `ex` correctly, with a short reason."""

    def judge_many(self, examples: Sequence[dict], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        if len(examples) != len(responses):
            raise ValueError(f"{len(examples)} examples but {len(responses)} responses")
        return [self.judge(ex, r) for ex, r in zip(examples, responses)]

    def describe(self) -> dict:
        """Versions recorded with every result that used this task."""
        return {"task": self.name, "template_version": self.template_version, "judge_version": self.judge_version}


def user(content: str) -> list[Message]:
    return [{"role": "user", "content": content}]

"""Shared base of short-answer reading tasks: several gold aliases per question, judged by matching or by an LLM.

``judge="match"`` (default) is SQuAD-normalised exact match or containment of any alias (evals.judges.text);
``judge="llm"`` is the paper's LLM judge, which needs a generator attached with `use_llm_judge` before judging.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evals.data import DataError, Field
from evals.judges import Verdict
from evals.judges import llm as llm_judge
from evals.judges import text as match_judge
from evals.tasks.base import Task, user

if TYPE_CHECKING:
    from evals.judges.llm import LLMJudge

PARAPHRASE = ("Below are a question and its reference answer. Using the reference answer as a guide, write your own "
              "response to the question.\n\n### Question:\n{instruction}\n\n### Reference answer:\n{gold}")

JUDGES = ("match", "llm")


class ReadingTask(Task):
    inline_fields = (Field("answers", list, item=str, nonempty=True),)
    max_new_tokens = 64
    paraphrase_max_new_tokens = 96
    judge_version = match_judge.JUDGE_VERSION

    def __init__(self, judge: str = "match", **options: Any) -> None:
        super().__init__(**options)
        if judge not in JUDGES:
            raise DataError(f"task {self.name}: judge must be one of {JUDGES}, not {judge!r}")
        self.judge_kind = judge
        self.judge_version = match_judge.JUDGE_VERSION if judge == "match" else llm_judge.JUDGE_VERSION
        self._llm: LLMJudge | None = None

    def inline_example(self, row: dict, where: str) -> dict:
        ex = super().inline_example(row, where)
        if not any(a.strip() for a in ex["answers"]):
            raise DataError(f"{where}: field 'answers' has no non-blank alias")
        return ex

    def use_llm_judge(self, judge: LLMJudge) -> None:
        self._llm = judge

    def paraphrase_messages(self, ex: dict) -> list[dict]:
        instruction = self.predict_messages(ex)[-1]["content"]
        return user(PARAPHRASE.format(instruction=instruction, gold=self.gold_response(ex)))

    def gold_response(self, ex: dict) -> str:
        return ex["answers"][0].strip()

    def judge(self, ex: dict, response: str) -> Verdict:
        return self.judge_many([ex], [response])[0]

    def judge_many(self, examples: Sequence[dict], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        if len(examples) != len(responses):
            raise ValueError(f"{len(examples)} examples but {len(responses)} responses")
        if self.judge_kind == "match":
            return [match_judge.judge_match(r, ex["answers"]) for ex, r in zip(examples, responses)]
        if self._llm is None:
            raise RuntimeError(f"task {self.name} uses the LLM judge but no judge model is attached "
                               "(call use_llm_judge, or pass --judge-model)")
        return self._llm.judge_many([self.question_text(ex) for ex in examples], list(responses),
                                    [" / ".join(ex["answers"][:5]) for ex in examples], progress=progress)

    def item_metrics(self, ex: dict, response: str) -> dict[str, float]:
        return match_judge.reading_scores(response, ex["answers"])

    def describe(self) -> dict:
        return {**super().describe(), "judge": self.judge_kind}

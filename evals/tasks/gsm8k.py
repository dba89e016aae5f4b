"""GSM8K: grade-school math word problems; judged by the final numeric answer.

Splits: the official train (7,473) and test (1,319). Ids: ``gsm8k/<split>/<row index>`` (the files are checksummed,
and the hub's row order is the same). Gold responses drop the ``<<48/2=24>>`` calculator marks and turn
``#### N`` into "The answer is N." so SFT trains the very format the prompt asks for.
"""
from __future__ import annotations

import re
from pathlib import Path

from evals.data import DataError, Field, Source, load_source
from evals.judges import Verdict
from evals.judges.numeric import JUDGE_VERSION, gold_answer, judge_numeric
from evals.judges.validity import VALIDITY_VERSION, gsm8k_invalid
from evals.tasks.base import Split, Task, user

_FIELDS = (Field("question", str, nonempty=True), Field("answer", str, nonempty=True))
_SOURCES = {
    "train": Source("gsm8k/train.jsonl", ("openai/gsm8k", "main", "train"), _FIELDS),
    "test": Source("gsm8k/test.jsonl", ("openai/gsm8k", "main", "test"), _FIELDS),
}

PREDICT = ("Solve the following math problem step by step. At the end, give the final answer as an integer in the "
           "form \"The answer is N.\"\n\nQuestion: {question}")
# SDFT's math rewrite prompt (Yang et al. 2024), plus the answer-format sentence of our predict prompt.
PARAPHRASE = ("Below are a math question and its reference answer. Refer to the reference answer and write a "
              "response that appropriately answers the question. Solve it step by step and end with \"The answer is "
              "N.\"\n\nQuestion: {question}\n\nReference answer: {gold}")

_CALC = re.compile(r"<<[^>]*>>")


class GSM8K(Task):
    name = "gsm8k"
    description = "GSM8K grade-school math; judge: final numeric answer equality"
    template_version = "gsm8k-v1"
    judge_version = JUDGE_VERSION
    validity_version = VALIDITY_VERSION
    inline_fields = (Field("answer", str, nonempty=True),)
    max_new_tokens = 320
    paraphrase_max_new_tokens = 384

    def load_split(self, split: str, data_dir: Path | None) -> Split:
        loaded = load_source(_SOURCES[split], data_dir)
        examples = [{"id": f"gsm8k/{split}/{i}", **row} for i, row in enumerate(loaded.rows)]
        return Split(examples, {split: loaded})

    def predict_messages(self, ex: dict) -> list[dict]:
        return user(PREDICT.format(question=ex["question"]))

    def paraphrase_messages(self, ex: dict) -> list[dict]:
        return user(PARAPHRASE.format(question=ex["question"], gold=self.gold_response(ex)))

    def gold_response(self, ex: dict) -> str:
        body, _, _ = ex["answer"].rpartition("####")
        return f"{_CALC.sub('', body).strip()}\nThe answer is {gold_answer(ex['answer']).replace(',', '')}."

    def inline_example(self, row: dict, where: str) -> dict:
        ex = super().inline_example(row, where)
        try:
            judge_numeric("", gold_answer(ex["answer"]))
        except ValueError as e:
            raise DataError(f"{where}: field 'answer': {e}") from None
        return ex

    def question_text(self, ex: dict) -> str:
        return ex["question"]

    def judge(self, ex: dict, response: str) -> Verdict:
        return judge_numeric(response, gold_answer(ex["answer"]))

    def paraphrase_invalid(self, ex: dict, text: str, verdict: Verdict) -> str | None:
        """A paraphrase must carry the solution: its intermediate results, at a length comparable to gold, and
        not as a copy of gold (evals.judges.validity)."""
        return gsm8k_invalid(text, ex["answer"], self.gold_response(ex))

"""LLM judge for open answers (the paper's reading-comprehension judge, its Fig. 8: question / predicted / gold).

It runs through the suite's generation interface, so any backend works and its verdicts are cached like every other
generation. In the paper the judge is the base model itself; self-judging bias is a known risk, recorded with the
judge model's fingerprint in every result.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evals.judges import Verdict
from repro.runtime.generate import DecodingParams

if TYPE_CHECKING:
    from repro.runtime.generate import DecodingParams, Generator

JUDGE_VERSION = "llm-judge-v2"
#: Token cap of the judge's reply (a yes/no and one sentence); part of the resolved configuration's hashes.
MAX_NEW_TOKENS = 48

PROMPT = """You are grading an answer to a question. Decide whether the predicted answer is correct, using the gold \
answer as the reference. A predicted answer is correct if it gives the same information as the gold answer, even if \
worded differently or longer; it is wrong if it gives different or no information.

Question: {question}
Gold answer: {gold}
Predicted answer: {predicted}

Is the predicted answer correct? Reply with "Yes" or "No" first, then one short sentence explaining why."""

_YES_NO = re.compile(r"\b(not\s+)?(yes|no|correct|incorrect)\b", re.IGNORECASE)


def parse_judgement(text: str) -> bool | None:
    """The first yes/no (or correct/incorrect) word of the judge's reply; None when there is none."""
    m = _YES_NO.search(text)
    if not m:
        return None
    positive = m.group(2).lower() in ("yes", "correct")
    return positive != bool(m.group(1))


class LLMJudge:
    """Judges (question, predicted, gold) triples with a generator; greedy, short replies."""

    version = JUDGE_VERSION

    def __init__(self, generator: Generator, params: DecodingParams | None = None) -> None:
        self.generator = generator
        self.params = params or DecodingParams(max_new_tokens=MAX_NEW_TOKENS)

    def judge_many(self, questions: Sequence[str], predicted: Sequence[str], golds: Sequence[str],
                   *, progress: bool = False) -> list[Verdict]:
        if not len(questions) == len(predicted) == len(golds):
            raise ValueError("questions, predicted and golds must have the same length")
        prompts = [[{"role": "user", "content": PROMPT.format(question=q, gold=g, predicted=p.strip())}]
                   for q, p, g in zip(questions, predicted, golds)]
        outs = self.generator.generate(prompts, self.params, tag=f"judge.{JUDGE_VERSION}", progress=progress)
        verdicts = []
        for out in outs:
            reply = " ".join(out.text.split())
            decision = parse_judgement(reply)
            if decision is None:
                verdicts.append(Verdict(False, f"judge gave no yes/no: {reply[:80]!r}", None))
            else:
                verdicts.append(Verdict(decision, f"LLM judge: {reply[:120]}", None))
        return verdicts

"""Per-task validity of a paraphrased gold answer, beside the judge (is the final answer right?) and the SDFT
banned-phrase filter (does it talk about the reference?): is the paraphrase a *usable training target* of its task?

A paraphrase target is meant to be a full solution in the model's own words (SDFT). The judge alone accepts a bare
"The answer is 18." on GSM8K, and training on that teaches the model to skip the reasoning. So:

- GSM8K: the paraphrase must contain at least ``MIN_RESULT_SHARE`` of the gold solution's intermediate results (the
  distinct results ``c`` of its ``<<a*b=c>>`` calculator marks), be at least ``MIN_WORD_RATIO`` times gold's length in
  words (and at least ``MIN_WORDS`` words), at most ``MAX_WORD_RATIO`` times it, and not be a verbatim copy of gold.
- MBPP: the extracted code must parse and define, at top level, a function the task's asserts call (the judge
  already ran the asserts).
- reading tasks: the judge's acceptance is the whole check (a short answer has no reasoning to keep).

Thresholds (decided from data; figures in the README, Methods): the gold training solutions of GSM8K have a median
of 3 distinct intermediate results (5th-95th percentile 1-5) and a median of 87 SmolLM2 tokens (5th-95th 44-179). A
faithful rewrite keeps every step; ``MIN_RESULT_SHARE = 0.5`` tolerates a step merged or written differently (e.g.
"half of 30" for 15) while rejecting a bare restatement, which carries at most the final result (share <= 1/3 for
the median solution). ``MIN_WORD_RATIO = 0.5`` and ``MIN_WORDS = 12`` reject restatements of the answer; the
``MAX_WORD_RATIO = 4`` cap rejects run-on text that repeats itself. A copy is a paraphrase whose normalised text
(case, whitespace and the final-answer line ignored) equals gold's or matches it at ``COPY_SIMILARITY`` or more
(difflib ratio); SDFT's point is the model's own distribution, and a copy is SFT under another name.

Bump ``VALIDITY_VERSION`` whenever a rule or threshold changes: it is part of the target-stage hash, so targets
built under other rules become stale.
"""
from __future__ import annotations

import ast
import difflib
import re

from evals.judges.numeric import normalize_number

VALIDITY_VERSION = "validity-v1"

MIN_RESULT_SHARE = 0.5
MIN_WORD_RATIO = 0.5
MAX_WORD_RATIO = 4.0
MIN_WORDS = 12
COPY_SIMILARITY = 0.95

_CALC = re.compile(r"<<([^>]*)>>")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_FINAL_LINE = re.compile(r"(?:####|the (?:final )?answer is)[^\n]*$", re.IGNORECASE)


def intermediate_results(gsm8k_answer: str) -> set:
    """The distinct results of a GSM8K gold solution's calculator marks ("<<48/2=24>>" -> 24), as exact rationals,
    without the final answer (which the judge already checks): the steps a restatement of the answer drops."""
    out = set()
    for mark in _CALC.findall(gsm8k_answer):
        value = normalize_number(mark.rsplit("=", 1)[-1])
        if value is not None:
            out.add(value)
    final = normalize_number(gsm8k_answer.rsplit("####", 1)[-1]) if "####" in gsm8k_answer else None
    return out - {final}


def numbers_in(text: str) -> set:
    return {v for v in (normalize_number(m) for m in _NUMBER.findall(text)) if v is not None}


def words(text: str) -> int:
    return len(text.split())


def _normalise(text: str) -> str:
    return " ".join(_FINAL_LINE.sub("", text.strip()).lower().split())


def is_copy(text: str, gold: str) -> bool:
    a, b = _normalise(text), _normalise(gold)
    return a == b or difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= COPY_SIMILARITY


def gsm8k_invalid(text: str, gsm8k_answer: str, gold_response: str) -> str | None:
    """Why a GSM8K paraphrase is not a usable target (a short reason kind), or None when it is."""
    results = intermediate_results(gsm8k_answer)
    if results:
        share = len(results & numbers_in(text)) / len(results)
        if share < MIN_RESULT_SHARE:
            return f"missing intermediate results ({len(results & numbers_in(text))}/{len(results)})"
    n, gold_n = words(text), words(gold_response)
    if n < max(MIN_WORDS, MIN_WORD_RATIO * gold_n):
        return f"too short ({n} words, gold {gold_n})"
    if n > MAX_WORD_RATIO * gold_n:
        return f"too long ({n} words, gold {gold_n})"
    if is_copy(text, gold_response):
        return "verbatim copy of gold"
    return None


def called_names(test_list: list[str]) -> set[str]:
    names = set()
    for t in test_list:
        try:
            tree = ast.parse(t)
        except SyntaxError:
            continue
        names |= {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    return names


def mbpp_invalid(code: str | None, test_list: list[str]) -> str | None:
    """Why an MBPP paraphrase's code is not a complete function for the task, or None when it is."""
    if code is None:
        return "no code"
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return "code does not parse"
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    if not defined & called_names(test_list):
        return "no top-level function the tests call"
    return None

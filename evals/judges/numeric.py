"""Numeric final-answer judge (GSM8K).

Extraction order: the last "The answer is N" (also "final answer is", "answer: N"), else the last "#### N", else the
last number in the text. Normalisation: thousands commas, "$", "%", a trailing period and trailing zeros go, so
"$1,234." == "1234" and "18.0" == "18". Comparison is exact on rationals, so 0.1 + 0.2 style float noise can't matter.
"""
from __future__ import annotations

import re
from fractions import Fraction

from evals.judges import Verdict

JUDGE_VERSION = "numeric-v1"

_NUM = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\s?\.\d+"
_ANSWER_IS = re.compile(rf"(?:final\s+)?answer\s*(?:is|:)\s*[:=]?\s*\**\s*\\?(?:boxed\{{)?\s*({_NUM})", re.IGNORECASE)
_HASHES = re.compile(rf"####\s*({_NUM})")
_ANY = re.compile(_NUM)


def normalize_number(text: str) -> Fraction | None:
    """Parse "1,234", "$5", "18.0", "-3.", ".5" into an exact rational; None when it is not a number."""
    s = text.strip().replace(",", "").replace("$", "").replace("%", "").replace(" ", "").rstrip(".")
    if s in ("", "-", "."):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def extract_answer(text: str) -> tuple[str | None, str]:
    """The final answer's text and the rule that found it ("answer-is", "####", "last-number" or "none")."""
    for rule, pattern in (("answer-is", _ANSWER_IS), ("####", _HASHES)):
        hits = pattern.findall(text)
        if hits:
            return hits[-1].strip(), rule
    hits = _ANY.findall(text)
    if hits:
        return hits[-1].strip(), "last-number"
    return None, "none"


def gold_answer(gsm8k_answer: str) -> str:
    """The number after "####" in a GSM8K gold solution."""
    m = _HASHES.search(gsm8k_answer)
    if not m:
        raise ValueError(f"GSM8K gold answer has no '#### N' line: {gsm8k_answer[-80:]!r}")
    return m.group(1)


def _show(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


def judge_numeric(response: str, gold: str) -> Verdict:
    gold_value = normalize_number(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    found, rule = extract_answer(response)
    if found is None:
        return Verdict(False, "no number in response", None)
    value = normalize_number(found)
    if value is None:
        return Verdict(False, f"could not parse {found!r} ({rule})", found)
    if value == gold_value:
        return Verdict(True, f"{_show(value)} == gold {_show(gold_value)} ({rule})", found)
    return Verdict(False, f"{_show(value)} != gold {_show(gold_value)} ({rule})", found)

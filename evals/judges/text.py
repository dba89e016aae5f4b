"""Short-answer matching for reading comprehension: SQuAD-normalised exact match, or containment of a gold alias.

Containment (the normalised alias appears as a whole-token span of the normalised response) is the lenient judge
chat models need: an instruct model answers "The regatta predates The Game by 23 years." where SQuAD's gold is
"23 years". It is a documented choice; the LLM judge (evals.judges.llm) is the paper's.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from evals.judges import Verdict

JUDGE_VERSION = "match-v2"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD v1.1's official normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _light(s: str) -> str:
    return " ".join(s.lower().split())


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def judge_match(response: str, golds: Sequence[str]) -> Verdict:
    """Correct when the response equals, or contains as a token span, any gold alias (after normalisation)."""
    resp = normalize_answer(response)
    # An alias made only of punctuation/articles ("A+", ")") normalises to ""; match it on its lower-cased text.
    aliases = [(g, normalize_answer(g) or _light(g)) for g in golds]
    aliases = [(g, n) for g, n in aliases if n]
    if not aliases:
        raise ValueError(f"no usable gold alias in {list(golds)!r}")
    if not resp:
        raw = _light(response)
        for gold, norm in aliases:
            if raw and raw == norm:
                return Verdict(True, f"exact match {gold!r}", response.strip())
        return Verdict(False, "empty response", "")
    for gold, norm in aliases:
        if resp == norm:
            return Verdict(True, f"exact match {gold!r}", response.strip())
    tokens = resp.split()
    for gold, norm in aliases:
        if _contains(tokens, norm.split()):
            return Verdict(True, f"contains {gold!r}", gold)
    shown = ", ".join(repr(g) for g, _ in aliases[:3]) + (" ..." if len(aliases) > 3 else "")
    return Verdict(False, f"no gold alias found ({shown})", None)


# --- strict exact match and token F1 (file tasks' `exact` and `f1` judges) ------------------------------------

EXACT_VERSION = "exact-v1"
F1_VERSION = "f1-v1"


def judge_exact(response: str, golds: Sequence[str]) -> Verdict:
    """Correct when the whole response equals a gold alias after SQuAD normalisation (no containment)."""
    resp = normalize_answer(response)
    aliases = [g for g in golds if normalize_answer(g) or _light(g)]
    if not aliases:
        raise ValueError(f"no usable gold alias in {list(golds)!r}")
    for gold in aliases:
        if resp == (normalize_answer(gold) or _light(gold)) or (not resp and _light(response) == _light(gold)):
            return Verdict(True, f"exact match {gold!r}", response.strip())
    return Verdict(False, "no exact match", response.strip())


# --- the field's reading metrics (official SQuAD v1.1 evaluation script, reported beside the judge) ------------------
READING_METRICS_VERSION = "squad-v1.1-official"


def exact_match_score(prediction: str, gold: str) -> float:
    """SQuAD v1.1 exact match: 1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """SQuAD v1.1 token F1 between normalised prediction and gold (bag of tokens, as the official script)."""

    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def reading_scores(response: str, golds: Sequence[str]) -> dict[str, float]:
    """Per-item reading metrics: official EM and F1 (max over gold answers), containment of a gold alias (this
    suite's lenient judge), and the answer's length in words (what containment rewards)."""
    if not golds:
        raise ValueError("no gold answers to score against")
    return {"em": max(exact_match_score(response, g) for g in golds),
            "f1": max(f1_score(response, g) for g in golds),
            "contains": float(judge_match(response, golds).correct),
            "answer_words": float(len(response.split()))}


def judge_f1(response: str, golds: Sequence[str], threshold: float) -> Verdict:
    """Correct when the best token F1 against any gold alias reaches `threshold`."""
    if not golds:
        raise ValueError("no gold alias")
    best, best_gold = max((f1_score(response, g), g) for g in golds)
    ok = best >= threshold
    return Verdict(ok, f"F1 {best:.2f} {'>=' if ok else '<'} {threshold:g} (best alias {best_gold!r})",
                   response.strip())

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

from scipy.optimize import linear_sum_assignment

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


# --- multi-span answers (DROP): every span of one gold annotation, the best annotation wins ------------------------
#
# A gold annotation is a list of spans ("Spain", "Italy", "the Netherlands"), all of which make the answer. A free-text
# response is cut into spans at commas, semicolons, line breaks and the word "and" (`response_spans`). The rules are
# those of DROP's official evaluator (allennlp-reading-comprehension drop_eval.py, `get_metrics`): per-token
# normalisation (lower case, punctuation and articles removed, numbers as floats, tokens split at spaces and
# hyphens); exact match when the sets of normalised spans are equal and equally many; F1 from a one-to-one alignment
# of predicted and gold spans (the assignment maximising the summed F1 of set-of-token bags; a gold span holding
# numbers scores 0 against a span without one of them), averaged over max(#predicted, #gold) spans, rounded to 2
# decimals. A single-span annotation keeps the single-span judges above (SQuAD normalisation), so specs that never
# had multi-span answers judge exactly as before.
MULTI_SPAN_VERSION = "multispan-v1"
_SPAN_SPLIT = re.compile(r"\s*(?:[,;\n]|\band\b|&)\s*", re.IGNORECASE)
_DROP_PUNCT = set(string.punctuation)


def response_spans(response: str) -> list[str]:
    """The spans a free-text response lists: its parts between commas, semicolons, line breaks and "and"."""
    spans = [s.strip(" .") for s in _SPAN_SPLIT.split(response.strip())]
    return [s for s in spans if s] or [response.strip()]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _drop_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in _DROP_PUNCT)
    if _is_number(token):
        token = str(float(token))
    return " ".join(_ARTICLES.sub(" ", token).split())


def drop_normalize(text: str) -> str:
    """DROP's official answer normalisation (`_normalize_answer`)."""
    parts = [_drop_token(t) for t in re.split(" |-", text)]
    return " ".join(p for p in parts if p.strip()).strip()


def _bag_f1(pred: set[str], gold: set[str]) -> float:
    same = len(gold & pred)
    precision = 1.0 if not pred else same / len(pred)
    recall = 1.0 if not gold else same / len(gold)
    return 0.0 if precision == 0.0 and recall == 0.0 else 2 * precision * recall / (precision + recall)


def _numbers_match(gold: set[str], pred: set[str]) -> bool:
    gold_numbers = {w for w in gold if _is_number(w)}
    return not gold_numbers or bool(gold_numbers & {w for w in pred if _is_number(w)})


def drop_metrics(predicted: Sequence[str], gold: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of predicted spans against one gold annotation's spans, as DROP's `get_metrics`."""
    pred_norm, gold_norm = [drop_normalize(s) for s in predicted], [drop_normalize(s) for s in gold]
    em = float(set(pred_norm) == set(gold_norm) and len(pred_norm) == len(gold_norm))
    pred_bags, gold_bags = [set(s.split()) for s in pred_norm], [set(s.split()) for s in gold_norm]
    scores = [[_bag_f1(p, g) if _numbers_match(g, p) else 0.0 for p in pred_bags] for g in gold_bags]
    rows, cols = linear_sum_assignment([[-x for x in row] for row in scores])
    best = [0.0] * max(len(gold_bags), len(pred_bags))
    for r, c in zip(rows, cols):
        best[r] = max(best[r], scores[r][c])
    return em, round(sum(best) / len(best), 2)


def _shown(spans: Sequence[str]) -> str:
    return " | ".join(spans)


def judge_spans(response: str, annotations: Sequence[Sequence[str]], kind: str, threshold: float = 0.5) -> Verdict:
    """Judge a response against gold annotations, each a list of spans, taking the best annotation.

    kind ``contains``: every span of an annotation appears in the response (the `contains` judge per span);
    ``exact``: the response's spans equal the annotation's (DROP exact match; one span: `judge_exact`);
    ``f1``: DROP's aligned F1 >= threshold (one gold span: `judge_f1`'s SQuAD token F1)."""
    if not annotations or not all(annotations):
        raise ValueError(f"no usable gold annotation in {list(annotations)!r}")
    singles = [a[0] for a in annotations if len(a) == 1]
    multis = [list(a) for a in annotations if len(a) > 1]
    best: Verdict | None = None
    if singles:
        best = {"contains": lambda: judge_match(response, singles), "exact": lambda: judge_exact(response, singles),
                "f1": lambda: judge_f1(response, singles, threshold)}[kind]()
        if best.correct:
            return best
    if kind == "contains":
        for spans in multis:
            missing = [s for s in spans if not judge_match(response, [s]).correct]
            if not missing:
                return Verdict(True, f"contains every span of {_shown(spans)!r}", response.strip())
        if multis and best is None:
            spans = multis[0]
            missing = [s for s in spans if not judge_match(response, [s]).correct]
            best = Verdict(False, f"spans missing: {_shown(missing)!r} (of {_shown(spans)!r})", None)
        return best
    pred = response_spans(response)
    top = max(((drop_metrics(pred, spans), spans) for spans in multis), key=lambda x: x[0][1 if kind == "f1" else 0],
              default=None)
    if top is None:
        return best
    (em, f1), spans = top
    if kind == "exact":
        ok = em == 1.0
        verdict = Verdict(ok, f"{'exact' if ok else 'no exact'} match of the spans {_shown(spans)!r}",
                          response.strip())
    else:
        ok = f1 >= threshold
        verdict = Verdict(ok, f"DROP F1 {f1:.2f} {'>=' if ok else '<'} {threshold:g} (spans {_shown(spans)!r})",
                          response.strip())
    return verdict if ok or best is None else best

"""Judges that read an answer out of a response by its shape: a multiple-choice letter, or a user's regex.

Choice extraction, in order (the first rule that finds a label wins; documented so results can be read):
  1. "answer is X" / "answer: X" (the last one), X a label of the item, optionally in parentheses or bold;
  2. the response starts with a label set off as a label: "B", "(B)", "B)", "B.", "B:" - not "A cat ..." (an article);
  3. exactly one distinct label appears set off as a label ("(C)", "C)", "C.") anywhere in the response;
  4. exactly one choice's text appears in the response (normalised, whole tokens): chat models often answer with
     the text instead of the letter.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from evals.judges import Verdict
from evals.judges.text import normalize_answer

CHOICE_VERSION = "choice-v1"
REGEX_VERSION = "regex-v1"


def _label_alt(labels: Sequence[str]) -> str:
    return "|".join(re.escape(lb) for lb in sorted(labels, key=len, reverse=True))


def extract_choice(response: str, labels: Sequence[str], texts: Sequence[str] = ()) -> tuple[str | None, str]:
    """The label a response picks and the rule that found it ("answer-is", "leading", "only-label", "text",
    or "none")."""
    alt = _label_alt(labels)
    # labels are matched case-sensitively: "the answer is a dog" does not pick A
    answer_is = re.compile(rf"(?i:answer)\s*(?:is|:)\s*:?\s*[*(\[]*\s*({alt})(?![\w'])")
    hits = answer_is.findall(response)
    if hits:
        return hits[-1], "answer-is"
    lead = re.match(rf"\s*[*(\[]*\s*({alt})\s*(?:[).:\]*]|$)", response)
    if lead:
        return lead.group(1), "leading"
    set_off = re.findall(rf"(?:\(({alt})\)|(?<![\w'])({alt})[).:](?!\w))", response)
    found = {a or b for a, b in set_off}
    if len(found) == 1:
        return found.pop(), "only-label"
    if texts:
        resp = f" {normalize_answer(response)} "
        matched = [lb for lb, t in zip(labels, texts) if normalize_answer(t) and f" {normalize_answer(t)} " in resp]
        if len(matched) == 1:
            return matched[0], "text"
    return None, "none"


def judge_choice(response: str, labels: Sequence[str], gold: str, texts: Sequence[str] = ()) -> Verdict:
    """Correct when the label extracted from the response is the gold label."""
    if gold not in labels:
        raise ValueError(f"gold label {gold!r} is not one of the labels {list(labels)}")
    picked, rule = extract_choice(response, labels, texts)
    if picked is None:
        return Verdict(False, "no choice found", None)
    return Verdict(picked == gold, f"{picked} {'==' if picked == gold else '!='} gold {gold} ({rule})", picked)


def judge_regex_extract(response: str, pattern: re.Pattern, golds: Sequence[str]) -> Verdict:
    """The last match of `pattern` (its first group, else the whole match) compared with the gold aliases after
    SQuAD normalisation."""
    matches = list(pattern.finditer(response))
    if not matches:
        return Verdict(False, "pattern not found", None)
    m = matches[-1]
    found = m.group(1) if pattern.groups else m.group(0)
    found = found or ""
    for gold in golds:
        norm = normalize_answer(gold)
        if (norm and normalize_answer(found) == norm) or (not norm and found.strip() == gold.strip()):
            return Verdict(True, f"extracted {found!r} == {gold!r}", found)
    return Verdict(False, f"extracted {found!r} matches no gold alias", found)


def judge_regex_match(response: str, pattern: str) -> Verdict:
    """Correct when the response contains a match of the item's own regex."""
    m = re.search(pattern, response)
    return Verdict(bool(m), "matches the item's pattern" if m else "does not match the item's pattern",
                   m.group(0) if m else None)

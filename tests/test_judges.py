"""Judges: GSM8K numeric extraction, SQuAD-style matching, the LLM judge over a fake generator, paraphrase filters,
and every task's gold response judged by its own judge on the real data."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from evals.judges import Verdict
from evals.judges.filters import BANNED_PHRASES, paraphrase_rejection
from evals.judges.llm import LLMJudge, parse_judgement
from evals.judges.numeric import extract_answer, gold_answer, judge_numeric, normalize_number
from evals.judges.text import judge_match, normalize_answer
from evals.tasks import get_task

# --- GSM8K numeric judge ----------------------------------------------------------------------------------------

# (response, gold, correct, extracted text, rule)
NUMERIC_CASES = [
    ("The answer is 18.", "18", True, "18", "answer-is"),
    ("The final answer is 18.", "18", True, "18", "answer-is"),
    ("#### 72", "72", True, "72", "####"),
    ("Natalia sold 48+24 = 72 clips.\n#### 72", "72", True, "72", "####"),
    ("She has 3 apples, buys 5 more and eats 1, so 7 remain", "7", True, "7", "last-number"),
    ("She has 3 apples, buys 5 more and eats 1, so 7 remain", "3", False, "7", "last-number"),
    ("It costs $1,234.50 in total", "1234.5", True, "$1,234.50", "last-number"),
    ("The answer is $1,234.50.", "1234.50", True, "$1,234.50", "answer-is"),
    ("The answer is $1,234.", "1,234", True, "$1,234", "answer-is"),
    ("The answer is 18.0", "18", True, "18.0", "answer-is"),
    ("18.0", "18", True, "18.0", "last-number"),
    ("The answer is 18.00.", "18", True, "18.00", "answer-is"),
    ("The answer is 1,000,000.", "1000000", True, "1,000,000", "answer-is"),
    ("The answer is 1000000", "1,000,000", True, "1000000", "answer-is"),
    ("The answer is -3.", "-3", True, "-3", "answer-is"),
    ("The answer is 3.", "-3", False, "3", "answer-is"),
    ("The answer is 18.5", "18", False, "18.5", "answer-is"),
    ("Answer: 42", "42", True, "42", "answer-is"),
    ("The answer is **42**.", "42", True, "42", "answer-is"),
    ("The answer is \\boxed{42}", "42", True, "42", "answer-is"),
    ("The answer is 0.5", ".5", True, "0.5", "answer-is"),
    # the marker wins over numbers after it and over a later "####"
    ("The answer is 7. Check: 7 * 2 = 14", "7", True, "7", "answer-is"),
    ("The answer is 7.\n#### 9", "7", True, "7", "answer-is"),
    # the last marker counts
    ("The answer is 5. Wait, recheck. The answer is 6.", "6", True, "6", "answer-is"),
    ("The answer is 5. Wait, recheck. The answer is 6.", "5", False, "6", "answer-is"),
    ("#### 72\nsome trailing note 5", "72", True, "72", "####"),
    ("The total is 20 - 8 = 12 apples.", "12", True, "12", "last-number"),
    ("I am not sure.", "12", False, None, "none"),
    ("", "12", False, None, "none"),
]


@pytest.mark.parametrize("response, gold, correct, extracted, rule", NUMERIC_CASES)
def test_numeric_judge_table(response, gold, correct, extracted, rule):
    v = judge_numeric(response, gold)
    assert isinstance(v, Verdict)
    assert v.correct is correct, v
    assert v.extracted == extracted
    assert extract_answer(response) == (extracted, rule)
    assert f"({rule})" in v.reason if rule != "none" else v.reason == "no number in response"


@pytest.mark.parametrize("text, value", [
    ("1,234", 1234), ("$5", 5), ("18.0", 18), ("-3.", -3), (".5", 0.5), ("$1,234.50", 1234.5), ("50%", 50),
    ("$ 7", 7), ("", None), ("-", None), (".", None), ("abc", None),
])
def test_normalize_number(text, value):
    got = normalize_number(text)
    assert got == value if value is not None else got is None


def test_gold_answer_from_gsm8k_solutions():
    assert gold_answer("2+3=<<2+3=5>>5\n#### 5") == "5"
    assert gold_answer("...\n#### 1,200") == "1,200"
    assert judge_numeric("The answer is 1200.", gold_answer("...\n#### 1,200")).correct
    assert not judge_numeric("The answer is 120.", gold_answer("...\n#### 1,200")).correct
    with pytest.raises(ValueError, match="####"):
        gold_answer("no final line")
    with pytest.raises(ValueError, match="not a number"):
        judge_numeric("The answer is 5", "five")


def test_numeric_reason_is_readable():
    assert judge_numeric("The answer is 18.", "18").reason == "18 == gold 18 (answer-is)"
    assert judge_numeric("The answer is 17.", "18").reason == "17 != gold 18 (answer-is)"


# --- text judge -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, norm", [
    ("The Eiffel Tower.", "eiffel tower"),
    ("  An apple;  a pear! ", "apple pear"),
    ("U.S.A.", "usa"),
    ("the theater", "theater"),          # articles are whole words only
    ("Anne, the queen", "anne queen"),
    ("", ""),
])
def test_normalize_answer(text, norm):
    assert normalize_answer(text) == norm


@pytest.mark.parametrize("response, golds, correct, kind", [
    ("The Eiffel Tower.", ["eiffel tower"], True, "exact match"),
    ("an apple", ["Apple"], True, "exact match"),
    ("Paris", ["London", "Paris"], True, "exact match"),
    ("The regatta predates The Game by 23 years.", ["23 years"], True, "contains"),
    ("23 years", ["23"], True, "contains"),
    ("It took 230 years.", ["23"], False, "no gold alias"),      # containment is on whole tokens
    ("It took 1230 years.", ["23 years"], False, "no gold alias"),
    ("Broncos", ["Denver Broncos"], False, "no gold alias"),    # a part of the alias is not the alias
    ("Denver Broncos won", ["Broncos"], True, "contains"),
    ("Answer: Paris, France", ["paris"], True, "contains"),
    ("five", ["5"], False, "no gold alias"),
    ("", ["x"], False, "empty response"),
    ("The.", ["x"], False, "empty response"),
])
def test_judge_match(response, golds, correct, kind):
    v = judge_match(response, golds)
    assert v.correct is correct, v
    assert v.reason.startswith(kind), v


def test_judge_match_exact_beats_containment_and_reports_alias():
    v = judge_match("the 23 years", ["23", "23 years"])
    assert v.correct and v.reason == "exact match '23 years'"
    v = judge_match("by 23 years", ["23 years"])
    assert v.reason == "contains '23 years'" and v.extracted == "23 years"


def test_judge_match_gold_alias_made_only_of_punctuation_or_articles():
    """Real NQ-open golds include "A+", ")" and "---" (see test_gold_responses_are_judged_correct). Such an alias
    normalises to "" under SQuAD rules; the judge must still judge (official SQuAD EM scores "" == "" as a match),
    not raise, and must not call the exact gold wrong."""
    assert judge_match("A+", ["A+", "AB+"]).correct
    assert not judge_match("B+", ["A+", "AB+"]).correct
    assert judge_match(")", [")"]).correct
    assert not judge_match("The third season", [")"]).correct


def test_judge_match_no_alias_at_all_is_an_error():
    with pytest.raises(ValueError):
        judge_match("x", [])


# --- LLM judge --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, decision", [
    ("Yes.", True), ("yes, it says the same", True), ("Correct", True),
    ("No", False), ("NO! it names a different city", False), ("Incorrect.", False),
    ("No, although the gold answer is correct", False),   # the first yes/no word decides
    ("I think so", None), ("", None), ("Noted.", None), ("Yesterday", None), ("Nobody knows", None),
])
def test_parse_judgement(text, decision):
    assert parse_judgement(text) is decision


@pytest.mark.parametrize("text, decision", [
    ("The predicted answer is not correct.", False),
    ("Not correct: it names a different year.", False),
])
def test_parse_judgement_negated_verdict_word(text, decision):
    """Small judge models often skip the leading Yes/No and write "... is not correct"; the negation decides."""
    assert parse_judgement(text) is decision


@dataclass
class _Out:
    text: str


class FakeGenerator:
    """The generator interface LLMJudge relies on: generate(prompts, params, tag=, progress=) -> [obj with .text]."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []

    def generate(self, prompts, params, *, tag, progress=True):
        self.calls.append({"prompts": prompts, "params": params, "tag": tag, "progress": progress})
        assert len(prompts) == len(self.replies)
        return [_Out(r) for r in self.replies]


def test_llm_judge_yes_no_garbage():
    gen = FakeGenerator(["Yes. Same year.", "No, it names a different city.", "Hmm, hard to say\n  really",
                         "  correct  "])
    judge = LLMJudge(gen)
    verdicts = judge.judge_many(["Q1?", "Q2?", "Q3?", "Q4?"], ["  1972 ", "Lyon", "blue", "x"],
                                ["December 1972", "Paris", "red", "x"])
    assert [v.correct for v in verdicts] == [True, False, False, True]
    assert verdicts[0].reason.startswith("LLM judge: Yes.")
    assert verdicts[2].reason.startswith("judge gave no yes/no") and "Hmm, hard to say really" in verdicts[2].reason
    call, = gen.calls
    assert call["tag"].startswith("judge.")
    assert call["params"].max_new_tokens == 48 and call["params"].temperature == 0.0
    first = call["prompts"][0]
    assert len(first) == 1 and first[0]["role"] == "user"
    text = first[0]["content"]
    assert "Question: Q1?" in text and "Gold answer: December 1972" in text and "Predicted answer: 1972\n" in text


def test_llm_judge_length_mismatch():
    with pytest.raises(ValueError):
        LLMJudge(FakeGenerator([])).judge_many(["q"], ["a", "b"], ["g"])


def test_reading_task_uses_attached_llm_judge():
    task = get_task("squad", judge="llm")
    ex = {"id": "squad/x", "title": "T", "context": "C", "question": "Who?", "answers": ["Ann", "Anne", "A"]}
    with pytest.raises(RuntimeError, match="judge"):
        task.judge(ex, "Ann")
    gen = FakeGenerator(["No"])
    task.use_llm_judge(LLMJudge(gen))
    v = task.judge(ex, "Ann")            # a match judge would say yes; the LLM said no
    assert v.correct is False and v.reason.startswith("LLM judge")
    assert "Gold answer: Ann / Anne / A" in gen.calls[0]["prompts"][0][0]["content"]
    assert task.describe()["judge"] == "llm" and task.judge_version.startswith("llm-judge")


# --- paraphrase filter ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("phrase", BANNED_PHRASES)
def test_paraphrase_filter_rejects_each_phrase_in_any_case(phrase):
    text = f"Step 1. {phrase.upper()} says 4. The answer is 4."
    assert paraphrase_rejection(text) == f"mentions {phrase!r}"


@pytest.mark.parametrize("text", [
    "According to the reference answer, the total is 12. The answer is 12.",
    "Using the Reference Solution as a guide: 12.",
    "Now it's your turn! The answer is 3.",
    "### Instruction:\nwrite code",
])
def test_paraphrase_filter_examples(text):
    assert paraphrase_rejection(text) is not None


@pytest.mark.parametrize("text", ["", "   \n"])
def test_paraphrase_filter_empty(text):
    assert paraphrase_rejection(text) == "empty paraphrase"


@pytest.mark.parametrize("text", [
    "She sold 48 / 2 = 24 clips in May, 72 in total. The answer is 72.",
    "def f(x):\n    return x + 1",
    "Refer to page 3: the regatta is 23 years older.",
])
def test_paraphrase_filter_accepts_clean_text(text):
    assert paraphrase_rejection(text) is None


# --- every gold response passes its own judge (real data) ----------------------------------------------------

@pytest.mark.parametrize("name", ["gsm8k", "squad", "nq_open"])
def test_gold_responses_are_judged_correct(data_dir, name):
    """SFT trains on gold responses and self-training methods compare against them: each must pass its judge.
    (MBPP's gold code is checked in test_judge_cli through the sandbox.)"""
    task = get_task(name)
    failures = []
    for split in task.splits:
        for ex in task.load_split(split, data_dir).examples:
            try:
                v = task.judge(ex, task.gold_response(ex))
            except Exception as e:  # noqa: BLE001  -- a crash on one real row aborts a whole evaluation
                failures.append((ex["id"], ex.get("answers"), f"{type(e).__name__}: {e}"))
                continue
            if not v.correct:
                failures.append((ex["id"], ex.get("answers"), v.reason))
    assert not failures, failures


def test_official_squad_metrics():
    from evals.judges.text import exact_match_score, f1_score, reading_scores  # noqa: PLC0415

    # the official script's normalisation: case, punctuation and articles do not count
    assert exact_match_score("The Denver Broncos!", "denver broncos") == 1.0
    assert f1_score("Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)   # P 2/3, R 1
    assert f1_score("no overlap", "Denver") == 0.0
    r = reading_scores("The regatta predates The Game by 23 years.", ["23 years", "twenty-three years"])
    assert r == {"em": 0.0, "f1": pytest.approx(2 * (2 / 6) * 1 / (2 / 6 + 1)), "contains": 1.0, "answer_words": 8.0}
    assert reading_scores("23 years", ["twenty", "23 years"])["em"] == 1.0   # max over gold answers

"""The per-task validity check on paraphrases (evals/judges/validity.py) and its place in target building."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from evals.judges import Verdict
from evals.judges.validity import gsm8k_invalid, intermediate_results, is_copy, mbpp_invalid, numbers_in

GOLD = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in "
        "April and May.\n#### 72")
GOLD_RESPONSE = ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n"
                 "The answer is 72.")


def test_intermediate_results_are_the_calculator_marks_results():
    assert intermediate_results(GOLD) == {24}           # 72 is the final answer: the judge checks that one
    assert intermediate_results("<<1,200*2=2,400>> then <<0.5*4=2>> and <<3/4=0.75>>\n#### 2") == {2400, Fraction(3, 4)}
    assert numbers_in("She paid $1,200.50 and 3.") == {Fraction("1200.50"), 3}


@pytest.mark.parametrize("text,why", [
    ("The answer is 72.", "missing intermediate results (0/1)"),
    ("In May she sold 24 clips. The answer is 72.", "too short"),
    (GOLD_RESPONSE, "verbatim copy of gold"),
    (GOLD_RESPONSE.replace("\n", "  ").upper(), "verbatim copy of gold"),
    ("In May Natalia sold half of 48, which is 24 clips. " * 12 + "The answer is 72.", "too long"),
])
def test_gsm8k_rejections(text, why):
    assert (gsm8k_invalid(text, GOLD, GOLD_RESPONSE) or "").startswith(why)


def test_gsm8k_accepts_a_full_rewrite():
    text = ("In April Natalia sold 48 clips. In May she sold half as many, so 48 divided by 2 gives 24 clips. "
            "Together that is 48 plus 24, which equals 72 clips.\nThe answer is 72.")
    assert gsm8k_invalid(text, GOLD, GOLD_RESPONSE) is None
    assert not is_copy(text, GOLD_RESPONSE)


def test_mbpp_needs_a_complete_function_the_tests_call():
    tests = ["assert add(1, 2) == 3"]
    assert mbpp_invalid("def add(a, b):\n    return a + b", tests) is None
    assert mbpp_invalid("add = lambda a, b: a + b", tests) is None
    assert mbpp_invalid(None, tests) == "no code"
    assert mbpp_invalid("def add(a, b):\n    return a +", tests) == "code does not parse"
    assert mbpp_invalid("def plus(a, b):\n    return a + b", tests) == "no top-level function the tests call"


def test_tasks_wire_their_checks():
    from evals.tasks import get_task  # noqa: PLC0415

    gsm8k, mbpp, squad = get_task("gsm8k"), get_task("mbpp"), get_task("squad")
    ex = {"id": "gsm8k/train/0", "question": "q", "answer": GOLD}
    assert gsm8k.paraphrase_invalid(ex, "The answer is 72.", Verdict(True, "ok")).startswith("missing")
    assert mbpp.paraphrase_invalid({"test_list": ["assert f(1) == 1"]}, "x", Verdict(True, "ok", "def g(): pass"))
    assert squad.paraphrase_invalid({"answers": ["Paris"]}, "Paris", Verdict(True, "ok")) is None
    assert gsm8k.validity_version == mbpp.validity_version != squad.validity_version


# --- the real SmolLM2's paraphrases of GSM8K training items ------------------------------------------------------

RECORDED = Path(__file__).with_name("data") / "smollm2_gsm8k_paraphrases.json"


class Replay:
    """Hands back recorded generations (text + finish reason) by example id, in the Generator interface."""

    def __init__(self, outputs):
        from repro.runtime.generate import GenerationStats  # noqa: PLC0415

        self.outputs, self.stats = outputs, GenerationStats()

    def describe(self):
        return {"backend": "replay"}

    def generate(self, prompts, params, *, tag, progress=True):
        from repro.runtime.generate import Generation  # noqa: PLC0415

        return [Generation(self.outputs[self._id(p)]["text"], 0, self.outputs[self._id(p)]["n_output_tokens"],
                           self.outputs[self._id(p)]["finish_reason"]) for p in prompts]

    def _id(self, prompt):
        return next(i for q, i in self.by_question.items() if q in prompt[-1]["content"])


@pytest.mark.skipif(not RECORDED.is_file(), reason="recorded SmolLM2 paraphrases not present")
def test_real_smollm2_paraphrases_accepted_only_with_the_solutions_results(data_dir, tmp_path):
    """Replays SmolLM2-135M-Instruct's recorded paraphrases of GSM8K training items (the file says how they were
    made) through target building: no accepted paraphrase lacks the gold solution's intermediate results, and every
    rejected one is counted under its stage."""
    from evals.tasks import get_task  # noqa: PLC0415
    from methods.targets import TargetContext, build  # noqa: PLC0415
    from repro.runtime.generate import DecodingParams  # noqa: PLC0415
    from repro.runtime.store import read_jsonl  # noqa: PLC0415

    rec = json.loads(RECORDED.read_text())
    task = get_task("gsm8k")
    assert rec["paraphrase_tag"] == task.paraphrase_tag, "recorded under another paraphrase prompt: re-record"
    examples = [ex for ex in task.load("train", data_dir) if ex["id"] in rec["outputs"]]
    assert len(examples) == len(rec["outputs"]) >= 8
    replay = Replay(rec["outputs"])
    replay.by_question = {ex["question"]: ex["id"] for ex in examples}
    ctx = TargetContext(task, examples, lambda: replay, DecodingParams(8), DecodingParams(8), progress=False)
    summary = build("sdft", ctx, tmp_path / "sdft", score=False)
    cands = {c["id"]: c["candidates"]["paraphrase"] for c in read_jsonl(tmp_path / "sdft" / "candidates.jsonl")}
    by_id = {ex["id"]: ex for ex in examples}
    for ex_id, c in cands.items():
        results = intermediate_results(by_id[ex_id]["answer"])
        if c["accepted"]:
            assert len(results & numbers_in(c["text"])) >= 0.5 * len(results), ex_id
            assert c["finish_reason"] != "length"
    acc = summary["acceptance"]["paraphrase"]
    assert acc["accepted"] + sum(acc["rejected_by"].values()) == acc["generated"] == len(examples)
    assert sum(acc["rejections"].values()) == acc["generated"] - acc["accepted"]
    assert acc["rejected_by"] == rec["expected_rejected_by"]     # as measured when recorded (README figures)

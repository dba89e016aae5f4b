"""MBPP: short Python functions judged by running the task's asserts in a sandbox.

Standard split by task_id: prompt (few-shot) 1-10, test 11-510 (500), validation 511-600, train 601-974 (374).
Ids: ``mbpp/<task_id>``. The asserts judged are ``test_list`` (``challenge_test_list`` is empty for almost every
task and is not used; documented choice). The prompt asks for a fenced Python block rather than the paper's
[[BEGIN]]/[[DONE]] markers because chat models emit fences; extraction accepts both, and bare code.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evals.data import Field, LoadedRows, Source, check_row, load_source
from evals.judges import Verdict
from evals.judges.code import JUDGE_VERSION, judge_code, judge_code_many
from evals.judges.validity import VALIDITY_VERSION, mbpp_invalid
from evals.tasks.base import Split, Task, user

_FIELDS = (Field("task_id", int), Field("text", str, nonempty=True), Field("code", str),
           Field("test_list", list, item=str, nonempty=True), Field("test_setup_code", str))
_SOURCE = Source("mbpp/mbpp.jsonl", None, _FIELDS)
# The hub's "full" config ships four splits; the hub path concatenates them (see _load_rows) so that the task_id rule
# below derives the standard split from local and hub rows alike.
_HUB_SPLITS = ("train", "test", "validation", "prompt")
RANGES = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}

PREDICT = ("You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n"
           "{tests}\n\nWrite the complete function in a single ```python code block.")
# SDFT's general rewrite prompt (Yang et al. 2024) around our predict prompt.
PARAPHRASE = ("Below are an instruction that describes a task along with a reference answer. Using the reference "
              "answer as a guide, write your own response.\n\n### Instruction:\n{instruction}\n\n### Reference "
              "answer:\n{gold}")


def _load_rows(data_dir: Path | None):
    if data_dir is not None:
        return load_source(_SOURCE, data_dir)

    parts = [load_source(Source(_SOURCE.local, ("google-research-datasets/mbpp", "full", s), _FIELDS), None)
             for s in _HUB_SPLITS]
    rows = sorted((r for p in parts for r in p.rows), key=lambda r: r["task_id"])
    return LoadedRows(rows, "hub:google-research-datasets/mbpp/full/*", None)


class MBPP(Task):
    name = "mbpp"
    description = "MBPP Python programming; judge: the task's asserts run in a sandbox"
    template_version = "mbpp-v1"
    judge_version = JUDGE_VERSION
    validity_version = VALIDITY_VERSION
    splits = ("train", "test", "validation", "prompt")
    inline_fields = (Field("test_list", list, item=str, nonempty=True),)
    max_new_tokens = 384
    paraphrase_max_new_tokens = 512

    def load_split(self, split: str, data_dir: Path | None) -> Split:
        loaded = _load_rows(data_dir)
        lo, hi = RANGES[split]
        examples = [{"id": f"mbpp/{r['task_id']}", **r} for r in loaded.rows if lo <= r["task_id"] <= hi]
        return Split(examples, {"mbpp": loaded})

    def predict_messages(self, ex: dict) -> list[dict]:
        return user(PREDICT.format(text=ex["text"], tests="\n".join(ex["test_list"])))

    def paraphrase_messages(self, ex: dict) -> list[dict]:
        instruction = self.predict_messages(ex)[-1]["content"]
        return user(PARAPHRASE.format(instruction=instruction, gold=self.gold_response(ex)))

    def gold_response(self, ex: dict) -> str:
        code = ex["code"].replace("\r\n", "\n").strip()
        return f"```python\n{code}\n```"

    def question_text(self, ex: dict) -> str:
        return ex["text"]

    def paraphrase_invalid(self, ex: dict, text: str, verdict: Verdict) -> str | None:
        """The asserts passed (the judge); the code must also be a complete function the tests call."""
        return mbpp_invalid(verdict.extracted, ex["test_list"])

    def inline_example(self, row: dict, where: str) -> dict:
        ex = super().inline_example(row, where)
        ex.setdefault("test_setup_code", "")
        check_row(ex, (Field("test_setup_code", str),), where)
        return ex

    def judge(self, ex: dict, response: str) -> Verdict:
        return judge_code(response, ex["test_list"], ex.get("test_setup_code") or "")

    def judge_many(self, examples: Sequence[dict], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        if len(examples) != len(responses):
            raise ValueError(f"{len(examples)} examples but {len(responses)} responses")
        items = [(r, ex["test_list"], ex.get("test_setup_code") or "") for ex, r in zip(examples, responses)]
        return judge_code_many(items, progress=progress)

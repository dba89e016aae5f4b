"""`python -m repro judge` as a user runs it (a subprocess), plus the `ls` / `models` verbs and every verb's --help."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evals.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
VERBS = ("run", "build", "train", "eval", "judge", "models", "ls", "validate")


def repro(*args, env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "repro", *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def judge(task: str, preds: Path, data_dir: Path, *extra) -> subprocess.CompletedProcess:
    return repro("judge", "--task", task, "--predictions", preds, "--data-dir", data_dir, "--quiet", *extra)


def read_verdicts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_verdicts(verdicts: list[dict], expected: list[bool], lines: list[int], ids: list[str | None]) -> None:
    assert len(verdicts) == len(expected)
    assert [v["correct"] for v in verdicts] == expected
    assert [v["line"] for v in verdicts] == lines
    assert [v.get("id") for v in verdicts] == ids
    for v in verdicts:
        assert isinstance(v["correct"], bool)
        assert isinstance(v["reason"], str) and v["reason"]
        assert "extracted" in v


def last_line(out: str) -> str:
    return out.rstrip("\n").splitlines()[-1]


@pytest.fixture(scope="module")
def examples(data_dir):
    return {name: {e["id"]: e for s in get_task(name).splits for e in get_task(name).load_split(s, data_dir).examples}
            for name in ("gsm8k", "mbpp", "squad")}


# --- GSM8K ------------------------------------------------------------------------------------------------------

def test_gsm8k_ids_and_inline(tmp_path, data_dir, examples):
    gold0 = examples["gsm8k"]["gsm8k/test/0"]["answer"].rpartition("####")[2].strip()   # 18
    gold5 = examples["gsm8k"]["gsm8k/train/5"]["answer"].rpartition("####")[2].strip()
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "gsm8k/test/0", "response": f"She makes ... The answer is {gold0}."},
        {"id": "gsm8k/train/5", "response": f"The answer is {int(gold5) + 1}."},
        "",                                                             # blank lines are skipped, not judged
        {"answer": "3 + 4 = <<3+4=7>>7\n#### 1,007", "response": "So the total is $1,007."},
        {"answer": "#### 18", "response": "I do not know."},
    ])
    out = tmp_path / "v.jsonl"
    r = judge("gsm8k", preds, data_dir, "--out", out)
    assert r.returncode == 0, r.stderr
    assert last_line(r.stdout) == "accuracy=0.500000 n=4"
    check_verdicts(read_verdicts(out), [True, False, True, False], [1, 2, 4, 5],
                   ["gsm8k/test/0", "gsm8k/train/5", None, None])
    v = read_verdicts(out)
    assert v[0]["extracted"] == gold0 and v[2]["extracted"] == "$1,007" and v[2]["reason"].endswith("(last-number)")
    assert v[2]["reason"].startswith("1007 == gold 1007")
    assert v[3]["reason"] == "no number in response"
    assert v[1]["reason"].startswith(f"{int(gold5) + 1} != gold {gold5}")


def test_verdicts_printed_when_no_out_file(tmp_path, data_dir):
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "gsm8k/test/0", "response": "The answer is 18."},
        {"answer": "#### 3", "response": "The answer is 4."},
        {"answer": "#### 3", "response": "The answer is 3."},
    ])
    r = judge("gsm8k", preds, data_dir)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.rstrip("\n").splitlines()
    assert lines[-1] == "accuracy=0.666667 n=3"
    check_verdicts([json.loads(x) for x in lines[:-1]], [True, False, True], [1, 2, 3], ["gsm8k/test/0", None, None])


def test_data_dir_from_environment(tmp_path, data_dir):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "gsm8k/test/0", "response": "The answer is 18."}])
    r = repro("judge", "--task", "gsm8k", "--predictions", preds, "--quiet",
              env_extra={"S3FT_DATA_DIR": str(data_dir)})
    assert r.returncode == 0, r.stderr
    assert last_line(r.stdout) == "accuracy=1.000000 n=1"


def test_empty_predictions_file(tmp_path, data_dir):
    """No predictions is an error, not accuracy 0 on n = 0 (issue 29)."""
    path = write_jsonl(tmp_path / "p.jsonl", [])
    r = judge("gsm8k", path, data_dir)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"error: {path}: no predictions (the file is empty); write one JSON "
                                             "object per line with 'response' and 'id' or the gold fields"]


# --- MBPP -------------------------------------------------------------------------------------------------------

def fenced(code: str) -> str:
    return "Here is the function:\n\n```python\n" + code.replace("\r\n", "\n").strip() + "\n```\n"


def test_mbpp_ids_and_inline(tmp_path, data_dir, examples):
    ex11, ex12, ex601 = (examples["mbpp"][k] for k in ("mbpp/11", "mbpp/12", "mbpp/601"))
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "mbpp/11", "response": fenced(ex11["code"])},                              # right (reference)
        {"id": "mbpp/12", "response": fenced("def sort_matrix(M):\n    return M")},      # wrong
        {"test_list": ex601["test_list"], "test_setup_code": "", "response": fenced(ex601["code"])},   # right
        {"test_list": ex12["test_list"], "response": "I would sort the rows by their sums."},          # no code
    ])
    out = tmp_path / "v.jsonl"
    r = judge("mbpp", preds, data_dir, "--out", out)
    assert r.returncode == 0, r.stderr
    assert last_line(r.stdout) == "accuracy=0.500000 n=4"
    v = read_verdicts(out)
    check_verdicts(v, [True, False, True, False], [1, 2, 3, 4], ["mbpp/11", "mbpp/12", None, None])
    assert v[0]["reason"] == "passed 3/3 asserts"
    assert v[1]["reason"].startswith("AssertionError")
    assert v[3]["reason"] == "no code found"


def test_mbpp_inline_test_setup_code_is_used(tmp_path, data_dir):
    code = "def shifted(x):\n    return x + OFFSET"
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"test_list": ["assert shifted(1) == 11"], "test_setup_code": "OFFSET = 10", "response": fenced(code)},
        {"test_list": ["assert shifted(1) == 11"], "test_setup_code": "OFFSET = 0", "response": fenced(code)},
    ])
    r = judge("mbpp", preds, data_dir)
    assert r.returncode == 0, r.stderr
    assert last_line(r.stdout) == "accuracy=0.500000 n=2"


def test_mbpp_reference_code_passes_for_tasks_with_test_setup_code(tmp_path, data_dir, examples):
    """MBPP 367 (test split) and 927 (train) build trees of the `Node` class in test_setup_code; the class is defined
    by the solution itself, so the setup can only run after the solution's code. Their reference code must pass."""
    ids = sorted(k for k, e in examples["mbpp"].items() if e["test_setup_code"].strip())
    assert ids == ["mbpp/367", "mbpp/927"]
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": k, "response": fenced(examples["mbpp"][k]["code"])}
                                               for k in ids])
    out = tmp_path / "v.jsonl"
    r = judge("mbpp", preds, data_dir, "--out", out)
    assert r.returncode == 0, r.stderr
    assert [v["correct"] for v in read_verdicts(out)] == [True, True], read_verdicts(out)


# --- SQuAD ------------------------------------------------------------------------------------------------------

def test_squad_ids_and_inline(tmp_path, data_dir, examples):
    squad = examples["squad"]
    harvard = squad["squad/5727dd2e4b864d1900163eba"]          # test split; gold "23 years"
    teacher = squad["squad/56e7504437bdd419002c3e5b"]          # train split; gold "outdoors"
    assert harvard["answers"][0] == "23 years" and teacher["answers"][0] == "outdoors"
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": harvard["id"], "response": "The regatta predates The Game by 23 years."},
        {"id": teacher["id"], "response": "In a classroom."},
        {"answers": ["Denver Broncos", "Broncos"], "response": "The Broncos."},
        {"answers": ["23"], "response": "230"},
    ])
    out = tmp_path / "v.jsonl"
    r = judge("squad", preds, data_dir, "--out", out)
    assert r.returncode == 0, r.stderr
    assert last_line(r.stdout) == "accuracy=0.500000 n=4"
    v = read_verdicts(out)
    check_verdicts(v, [True, False, True, False], [1, 2, 3, 4], [harvard["id"], teacher["id"], None, None])
    assert v[0]["reason"].startswith("contains") and v[2]["reason"] == "exact match 'Broncos'"


# --- bad input --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task, rows, line, words", [
    ("gsm8k", [{"id": "gsm8k/test/0", "response": "18"}, {"id": "gsm8k/test/1"}], 2, ["'response'"]),
    ("gsm8k", [{"id": "gsm8k/test/0", "response": 18}], 1, ["'response'"]),
    ("gsm8k", [{"id": "gsm8k/test/0", "response": "18"}, "", {"id": "gsm8k/test/99999", "response": "1"}], 3,
     ["'id'", "gsm8k/test/99999"]),
    ("squad", [{"id": "gsm8k/test/0", "response": "18"}], 1, ["'id'", "gsm8k/test/0", "squad"]),
    ("mbpp", [{"id": "mbpp/11", "response": "x"}, {"response": "x"}], 2, ["'test_list'"]),
    ("squad", [{"answers": "Paris", "response": "Paris"}], 1, ["'answers'", "list"]),
    ("gsm8k", [{"id": "gsm8k/test/0", "response": "18"}, "{not json"], 2, ["invalid JSON"]),
    ("gsm8k", [[1, 2]], 1, ["'response'"]),
])
def test_bad_input_exit_2_names_file_and_line(tmp_path, data_dir, task, rows, line, words):
    preds = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "v.jsonl"
    r = judge(task, preds, data_dir, "--out", out)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"{preds}:{line}:" in r.stderr
    for w in words:
        assert w in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists(), "no verdict file may be written when the input is bad"


@pytest.mark.parametrize("task, row, line_words", [
    ("gsm8k", {"id": ["gsm8k/test/0"], "response": "18"}, ["'id'"]),                   # unhashable id
    ("gsm8k", {"answer": "no final line here", "response": "18"}, ["'answer'", "####"]),
    ("squad", {"answers": ["  "], "response": "Paris"}, ["'answers'"]),
    ("mbpp", {"test_list": ["assert f() == 1"], "test_setup_code": 5,
              "response": "```python\ndef f():\n    return 1\n```"}, ["'test_setup_code'"]),
])
def test_malformed_inline_gold_is_a_clean_error(tmp_path, data_dir, task, row, line_words):
    """Malformed values in an otherwise valid line are bad input too: exit 2 naming the file, line and field, not a
    traceback from deep inside a judge."""
    preds = write_jsonl(tmp_path / "p.jsonl", [row])
    r = judge(task, preds, data_dir)
    assert r.returncode == 2, (r.returncode, r.stderr[-600:])
    assert f"{preds}:1:" in r.stderr
    for w in line_words:
        assert w in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_predictions_file(tmp_path, data_dir):
    missing = tmp_path / "nope.jsonl"
    r = judge("gsm8k", missing, data_dir)
    assert r.returncode == 2, (r.returncode, r.stderr[-600:])
    assert str(missing) in r.stderr and "Traceback" not in r.stderr


def test_unknown_task_and_missing_data_dir(tmp_path, data_dir):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"answer": "#### 1", "response": "1"}])
    r = judge("nosuch", preds, data_dir)
    assert r.returncode != 0 and "nosuch" in r.stderr
    r = judge("gsm8k", write_jsonl(tmp_path / "q.jsonl", [{"id": "gsm8k/test/0", "response": "1"}]),
              tmp_path / "no-data")
    assert r.returncode == 2
    assert str(tmp_path / "no-data") in r.stderr and "does not exist" in r.stderr


# --- other verbs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb):
    r = repro(verb, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: python -m repro {verb}")


def test_top_level_help_lists_every_verb():
    r = repro("--help")
    assert r.returncode == 0
    for verb in VERBS:
        assert f"\n  {verb} " in r.stdout


def test_ls_tasks_and_models():
    r = repro("ls", "tasks")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0] for line in r.stdout.splitlines()[2:] if line.strip()}
    assert rows == {"gsm8k", "mbpp", "squad", "nq_open"}
    r = repro("ls", "models")
    assert r.returncode == 0, r.stderr
    names = {line.split()[0] for line in r.stdout.splitlines()[2:] if line.strip() and not line.startswith("Any")}
    assert {"tiny", "smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct"} <= names
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in r.stdout


@pytest.mark.parametrize("what, expect", [("methods", ["sft", "ssr", "s3ft"]), ("presets", ["smoke"]),
                                          ("benchmarks", ["hellaswag", "arc_challenge"])])
def test_ls_other_lists(what, expect):
    r = repro("ls", what)
    assert r.returncode == 0, r.stderr
    first_words = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    assert set(expect) <= first_words


def test_ls_rejects_unknown_listing():
    r = repro("ls", "everything")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_models_path_and_errors(tmp_path, smollm2_dir):
    # A hub id resolves to its local snapshot; offline (as the tests run) and never downloaded, that is an error
    # that says how to get it, not a path to nowhere.
    r = repro("models", "path", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert r.returncode != 0 and "HF_HUB_OFFLINE" in r.stderr, (r.stdout, r.stderr)
    r = repro("models", "path", "smollm2-135m-instruct")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == Path(smollm2_dir)
    r = repro("models", "path", str(smollm2_dir))
    assert r.returncode == 0 and Path(r.stdout.strip()) == Path(smollm2_dir).resolve()
    r = repro("models", "fetch", "no-such-model", env_extra={"S3FT_CACHE": str(tmp_path / "cache")})
    assert r.returncode != 0
    assert "no-such-model" in r.stderr and "smollm2-135m-instruct" in r.stderr
    r = repro("models", "describe", str(smollm2_dir))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "local" and len(info["fingerprint"]) == 64

"""Every bad input a new user can give - a task file, its data, a recipe, the command line - ends in exit code 2 and
one line on stderr that names the file, the row and the field where there is one (issue 29); a failed build writes
nothing. Also: real datasets' gold (BoolQ's booleans, DROP's multi-span annotations) without Python. No model is
loaded: every failure here happens before one would be."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import run_repro
from test_file_tasks import QA

from evals.judges.text import drop_metrics, judge_spans, response_spans
from evals.tasks.from_file import FileTask
from repro.cli import main

ROWS = [{"qid": f"q{i}", "q": f"Question {i}?", "a": f"answer {i}"} for i in range(8)]
SPEC = QA            # name qa, one file split by a seeded hash, prompt {question: q}, gold a, judge contains a


def _write(tmp_path: Path, spec: str = SPEC, data: str | None = None, data_name: str = "rows.jsonl") -> Path:
    if data is None:
        data = "".join(json.dumps(r) + "\n" for r in ROWS)
    (tmp_path / data_name).write_text(data)
    p = tmp_path / "t.yaml"
    p.write_text(textwrap.dedent(spec))
    return p


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:            # argparse's usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def build(capsys, tmp_path: Path, task: Path | str, *extra: str) -> tuple[int, str, str]:
    rc, out, err = cli(capsys, "build", "--task", task, "--method", "sft", "--model", "tiny", "--quiet",
                       "--work-dir", tmp_path / "runs", *extra)
    return rc, out, err


def assert_nothing_written(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(p.is_file() for p in runs.rglob("*")), list(runs.rglob("*"))


# --- empty results are errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("data_name, data, needle", [
    ("rows.jsonl", "", "has no rows"),
    ("rows.csv", "qid,q,a\n", "has no rows"),
    ("rows.jsonl", "\n\n   \n", "has no rows"),
    ("rows.jsonl", json.dumps(ROWS[0]) + "\n", "side of"),          # the one row goes to one side only
])
def test_empty_data_fails_build_eval_and_dry_runs(capsys, tmp_path, data_name, data, needle):
    spec = _write(tmp_path, SPEC.replace("rows.jsonl", data_name), data, data_name)
    line = one_line_error(*build(capsys, tmp_path, spec)[::2], str(spec), needle)
    assert "data." in line
    assert_nothing_written(tmp_path)
    rc, _, err = cli(capsys, "eval", "--model", "tiny", "--tasks", spec, "--out", tmp_path / "r.json",
                     "--work-dir", tmp_path / "runs")
    one_line_error(rc, err, needle)
    assert not (tmp_path / "r.json").exists()
    rc, _, err = cli(capsys, "compare", "--task", spec, "--dry-run", "--work-dir", tmp_path / "cmp")
    one_line_error(rc, err, needle)


def test_empty_test_file_of_train_test_pair(capsys, tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    spec = _write(tmp_path, SPEC.replace("{file: rows.jsonl, split: {test_fraction: 0.5, seed: 7}, id: qid}",
                                         "{train: rows.jsonl, test: test.jsonl, id: qid}"))
    one_line_error(*build(capsys, tmp_path, spec)[::2], "data.test", "test.jsonl", "has no rows")


@pytest.mark.parametrize("flag", ["0", "-3", "x"])
def test_limit_must_be_positive(capsys, tmp_path, flag):
    rc, _, err = build(capsys, tmp_path, _write(tmp_path), "--limit", flag)
    one_line_error(rc, err, "--limit")
    assert_nothing_written(tmp_path)


def test_judge_with_no_predictions(capsys, tmp_path):
    spec = _write(tmp_path)
    preds = tmp_path / "preds.jsonl"
    preds.write_text("\n\n")
    one_line_error(*cli(capsys, "judge", "--task", spec, "--predictions", preds)[::2], str(preds), "no predictions")


# --- command-line values ----------------------------------------------------------------------------------------

def test_unknown_method_preset_and_task(capsys, tmp_path):
    spec = _write(tmp_path)
    rc, _, err = cli(capsys, "build", "--task", spec, "--method", "sfft", "--model", "tiny",
                     "--work-dir", tmp_path / "runs")
    one_line_error(rc, err, "unknown method 'sfft'", "s3ft")
    assert_nothing_written(tmp_path)
    one_line_error(*cli(capsys, "run", "--preset", "nosuch", "--dry-run")[::2], "no preset 'nosuch'", "quick")
    one_line_error(*cli(capsys, "run", "--preset", "smoke", "--methods", "sfft", "--dry-run",
                        "--work-dir", tmp_path / "runs")[::2], "unknown method 'sfft'")
    one_line_error(*build(capsys, tmp_path, "gsm8kk")[::2], "unknown task 'gsm8kk'", "gsm8k")
    txt = tmp_path / "task.txt"
    txt.write_text(SPEC)
    one_line_error(*build(capsys, tmp_path, txt)[::2], str(txt), ".yaml", "rename")
    one_line_error(*build(capsys, tmp_path, tmp_path / "missing.yaml")[::2], "missing.yaml", "not found")
    one_line_error(*cli(capsys, "judge", "--task", "nosuch", "--predictions", spec)[::2], "unknown task")
    assert_nothing_written(tmp_path)


def test_judge_flag_on_a_task_without_one(capsys, tmp_path):
    spec = _write(tmp_path)
    one_line_error(*build(capsys, tmp_path, spec, "--judge", "llm")[::2], "--judge llm", "drop --judge")
    one_line_error(*build(capsys, tmp_path, "gsm8k", "--judge", "llm")[::2], "--judge llm")
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"response": "x", "a": "x"}) + "\n")
    one_line_error(*cli(capsys, "judge", "--task", spec, "--judge", "llm", "--predictions", preds)[::2],
                   str(spec), "judge")
    assert_nothing_written(tmp_path)


def test_unknown_model_benchmark_and_output_folder(capsys, tmp_path):
    spec = _write(tmp_path)
    one_line_error(*build(capsys, tmp_path, spec, "--model", "nosuch-model")[::2], "--model nosuch-model",
                   "not a registered name")
    one_line_error(*cli(capsys, "eval", "--model", "tiny", "--tasks", spec, "--benchmarks", "mmlux", "--out",
                        tmp_path / "r.json", "--work-dir", tmp_path / "runs")[::2], "unknown benchmark 'mmlux'")
    one_line_error(*cli(capsys, "eval", "--model", "tiny", "--tasks", spec, "--out", tmp_path,
                        "--work-dir", tmp_path / "runs")[::2], "--out", "is a folder")
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"response": "x", "q": "Q?", "a": "x"}) + "\n")
    one_line_error(*cli(capsys, "judge", "--task", spec, "--predictions", preds, "--out", tmp_path)[::2],
                   "is a folder")
    assert_nothing_written(tmp_path)


def test_spreadsheet_byte_order_mark_is_not_part_of_the_first_column(capsys, tmp_path):
    csv_text = "\ufeffqid,q,a\n" + "".join(f"{r['qid']},{r['q']},{r['a']}\n" for r in ROWS)
    spec = _write(tmp_path, SPEC.replace("rows.jsonl", "rows.csv"), csv_text, "rows.csv")
    ids = {ex["id"] for s in ("train", "test") for ex in FileTask(spec).load_split(s, None).examples}
    assert ids == {f"qa/{r['qid']}" for r in ROWS}


def test_train_and_models_verbs(capsys, tmp_path):
    targets = tmp_path / "targets.jsonl"
    targets.write_text(json.dumps({"prompt": [{"role": "user", "content": "Q?"}]}) + "\n")
    train = ("train", "--model", "tiny", "--targets", targets, "--out", tmp_path / "runs")
    one_line_error(*cli(capsys, *train)[::2], f"{targets}:1", "'target' is missing")
    one_line_error(*cli(capsys, *train, "epochz=1")[::2], "unknown training option(s) ['epochz']")
    one_line_error(*cli(capsys, *train, "epochs=abc")[::2], "epochs")
    targets.write_text("\n")
    one_line_error(*cli(capsys, *train)[::2], "no targets")
    assert_nothing_written(tmp_path)
    one_line_error(*cli(capsys, "models", "path", "nosuch")[::2], "--model nosuch", "not a registered name")
    one_line_error(*cli(capsys, "models", "fetch", "org/name")[::2], "only registered offline models")


def test_argparse_errors_are_one_line(capsys):
    one_line_error(*cli(capsys, "build", "--task", "gsm8k")[::2], "build", "--method")
    one_line_error(*cli(capsys, "nosuchverb")[::2], "invalid choice")


def test_bad_recipe_values(capsys, tmp_path):
    spec = _write(tmp_path)
    recipe = tmp_path / "r.yaml"
    base = {"name": "r", "model": "tiny", "tasks": {str(spec): {"train": 2, "test": 2}}, "methods": ["base"],
            "seeds": [0], "train": {}}
    for change, needle in [({"tasks": {str(spec): {"train": 0}}}, "train: must be a number of items >= 1"),
                           ({"methods": "sft"}, "methods: must be a list"),
                           ({"train": {"epochz": 1}}, "epochz"),
                           ({"tasks": {"gsm8kk": {}}}, "unknown task 'gsm8kk'"),
                           ({"tasks": {str(spec): {"judge": "llm"}}}, "only the reading tasks")]:
        recipe.write_text(json.dumps({**base, **change}))
        one_line_error(*cli(capsys, "run", "--preset", recipe, "--dry-run", "--work-dir", tmp_path / "runs")[::2],
                       needle)
    recipe.write_text("name: r\nname: s\n")
    one_line_error(*cli(capsys, "run", "--preset", recipe, "--dry-run")[::2], f"{recipe}:2:1", "twice")
    recipe.write_text("")
    one_line_error(*cli(capsys, "run", "--preset", recipe, "--dry-run")[::2], "empty file")
    recipe.write_text(json.dumps(base))
    one_line_error(*cli(capsys, "run", "--preset", recipe, "--dry-run", "train.epochs")[::2], "key=value")


# --- the task file and its data ---------------------------------------------------------------------------------

def test_short_csv_row_names_file_line_and_missing_cell(capsys, tmp_path):
    csv_text = "qid,q,a\nq0,Question 0?,answer 0\nq1,Question 1?\nq2,Question 2?,answer 2\n"
    spec = _write(tmp_path, SPEC.replace("rows.jsonl", "rows.csv"), csv_text, "rows.csv")
    line = one_line_error(*build(capsys, tmp_path, spec)[::2], f"{tmp_path / 'rows.csv'}:3", "missing ['a']")
    assert "None" not in line
    assert_nothing_written(tmp_path)


def test_yaml_syntax_error_is_one_line_with_line_and_column(capsys, tmp_path):
    spec = _write(tmp_path, SPEC.replace("prompt: {question: q}", "prompt: {question: q\nextra: [1"))
    one_line_error(*build(capsys, tmp_path, spec)[::2], f"{spec}:", "not valid YAML")
    spec = _write(tmp_path, SPEC + "  - stray\n")
    line = one_line_error(*build(capsys, tmp_path, spec)[::2], f"{spec}:7:3", "not valid YAML")
    assert "<unicode string>" not in line
    spec = _write(tmp_path, SPEC + "name: again\n")
    one_line_error(*build(capsys, tmp_path, spec)[::2], f"{spec}:7:1", "'name' appears twice")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("bad, col", [('{"qid": "q9", "q": "Q?", "a": "ans', 31), ('{"qid": "q9", "q": 1', 21),
                                      ('{"qid": "q9" "q": 1}', 14)])
def test_malformed_json_line_names_its_line_and_column(capsys, tmp_path, bad, col):
    data = "".join(json.dumps(r) + "\n" for r in ROWS[:2]) + bad + "\n" + json.dumps(ROWS[2]) + "\n"
    spec = _write(tmp_path, data=data)
    line = one_line_error(*build(capsys, tmp_path, spec)[::2], "rows.jsonl:3: invalid JSON", f"at column {col})")
    assert "line 2 column 1" not in line
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"response": "x", "a": "x"}) + "\n" + bad + "\n")
    one_line_error(*cli(capsys, "judge", "--task", "squad", "--predictions", preds)[::2], "preds.jsonl:2: invalid JSON",
                   f"at column {col})")


@pytest.mark.parametrize("change, needles", [
    (("gold: {field: a}", "gold: {template: 'The answer is {{ a }}, {{ b }}.'}"), ["rows.jsonl:", "gold"]),
    (("gold: {field: a}", "gold: {template: 'The answer is {a'}"), ["gold.template", "Python format"]),
    (("gold: {field: a}", "gold: {field: flag}"), ["gold.field", "boolean", "gold.map"]),
    (("judge: {kind: contains, answers: a}", "judge: {kind: contains, answers: flag}"), ["judge.answers", "judge.map"]),
    (("gold: {field: a}", "gold: {field: flag, map: {true: 'yes'}}"), ["gold.map", "False", "add it"]),
    (("gold: {field: a}", "gold: {field: a, map: []}"), ["gold.map: must be a non-empty mapping"]),
    (("judge: {kind: contains, answers: a}", "judge: {kind: contains, answers: a, multi_span: 1}"),
     ["judge.multi_span"]),
    (("gold: {field: a}", "gold: {template: '{{ nothing }}'}"), ["rows.jsonl:", "nothing"]),
    (("gold: {field: a}", "gold: {template: 'x {{ none_field }}'}"), ["rows.jsonl:", "null"]),
    (("version: v1", "version: v1\ndescription: [1]"), ["description"]),
    (("version: v1", "version: [v1]"), ["version"]),
    (("data: {file: rows.jsonl,", "data: {file: nothere.jsonl,"), ["nothere.jsonl", "not found"]),
    (("data: {file: rows.jsonl,", "data: {file: rows.txt,"), ["rows.txt", ".jsonl"]),
    (("test_fraction: 0.5", "test_fraction: 1.5"), ["data.split.test_fraction"]),
    (("id: qid", "id: nope"), ["data.id", "rows.jsonl:1", "'nope'"]),
    (("prompt: {question: q}", "prompt: {question: nope}"), ["rows.jsonl:1", "prompt.question"]),
    (("prompt: {question: q}", "prompt: {template: '{{ q }'}"), ["prompt.template", "Jinja"]),
    (("kind: contains", "kind: containz"), ["judge.kind", "'containz'"]),
    (("judge: {kind: contains, answers: a}", "judge: {kind: contains}"), ["judge", "missing key(s) ['answers']"]),
    (("judge: {kind: contains, answers: a}", "judge: {kind: numeric, answer: a}"), ["rows.jsonl:1", "not a number"]),
    (("judge: {kind: contains, answers: a}", "judge: {kind: choice, answer: a, choices: q}"),
     ["rows.jsonl:1", "judge.choices"]),
    (("gold: {field: a}", "gold: {field: a, join: 3}"), ["gold.join"]),
    (("gold: {field: a}", "gold: {template: x, map: {a: b}}"), ["gold: map and join go with gold.field"]),
    (("name: qa", "name: Q A"), ["name:"]),
    (("name: qa", "name: squad"), ["built-in task"]),
    (("name: qa", "max_new_tokens: 0\nname: qa"), ["max_new_tokens: must be an integer >= 1"]),
    (("kind: contains", "kind: [contains]"), ["judge.kind"]),
    (("prompt: {question: q}", "prompt: {question: q, question: a}"), ["'question' appears twice"]),
    (("data: {file: rows.jsonl,", "data: {file: '{data_dir}/rows.jsonl',"), ["no data directory", "--data-dir"]),
])
def test_bad_fields_name_file_row_and_key(capsys, tmp_path, change, needles):
    rows = [{**r, "flag": i % 2 == 0, "none_field": None} for i, r in enumerate(ROWS)]
    spec = _write(tmp_path, SPEC.replace(*change), "".join(json.dumps(r) + "\n" for r in rows))
    one_line_error(*build(capsys, tmp_path, spec)[::2], str(spec), *needles)
    assert_nothing_written(tmp_path)


def test_checks_read_the_data_before_any_model(capsys, tmp_path):
    """ls tasks, run --dry-run and compare --dry-run read every row; a broken task fails there."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    good = _write(folder)
    rc, out, err = cli(capsys, "ls", "tasks", "--tasks-dir", folder)
    n_train = len(FileTask(good).load_split("train", None).examples)
    assert rc == 0 and f"{n_train} train / {len(ROWS) - n_train} test" in out, (out, err)
    (folder / "rows.jsonl").write_text(json.dumps(ROWS[0]) + "\n" + '{"qid": "q1", "q": "Q?"}\n')
    rc, out, err = cli(capsys, "ls", "tasks", "--tasks-dir", folder)
    one_line_error(rc, err, "1 of 1 task files", "rows.jsonl:2", "gold.field")
    assert "(invalid)" in out
    (folder / "rows.jsonl").unlink()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"name": "r", "model": "tiny", "tasks": {str(good): {}}, "methods": ["base"],
                                  "seeds": [0], "train": {}}))
    one_line_error(*cli(capsys, "run", "--preset", recipe, "--dry-run", "--work-dir", tmp_path / "runs")[::2],
                   "data file", "not found")
    one_line_error(*cli(capsys, "compare", "--task", good, "--dry-run", "--work-dir", tmp_path / "runs")[::2],
                   "data file", "not found")


def test_dry_run_reports_checked_data(capsys, tmp_path):
    spec = _write(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"name": "r", "model": "tiny", "tasks": {str(spec): {"train": 2}},
                                  "methods": ["base"], "seeds": [0], "train": {}}))
    rc, out, err = cli(capsys, "run", "--preset", recipe, "--dry-run", "--work-dir", tmp_path / "runs")
    assert rc == 0, err
    n_train = len(FileTask(spec).load_split("train", None).examples)
    assert f"data checked, {n_train} training / {len(ROWS) - n_train} test items (this preset uses 2 /" in out


def test_the_real_command_line_prints_one_line(tmp_path):
    """The same through `python -m repro` in a subprocess: exit 2, one stderr line, no traceback."""
    spec = _write(tmp_path, SPEC.replace("rows.jsonl", "rows.csv"), "qid,q,a\n", "rows.csv")
    p = run_repro("build", "--task", str(spec), "--method", "sft", "--model", "tiny", "--work-dir",
                  str(tmp_path / "runs"), timeout=120)
    one_line_error(p.returncode, p.stderr, "has no rows")
    assert_nothing_written(tmp_path)


# --- real datasets' gold without Python -------------------------------------------------------------------------

def _real_task(name: str, file: str, rest: str) -> str:
    """A spec over one file of the shared data directory, split half/half."""
    return (f"name: {name}\nversion: v1\ndata:\n  file: \"{{data_dir}}/{file}\"\n"
            f"  split: {{test_fraction: 0.5, seed: 1234}}\n{rest}")


BOOLQ = _real_task("boolq", "boolq/validation.jsonl", """\
prompt:
  template: "Read the passage and answer the question with yes or no.\\n\\nPassage: {passage}\\n\\nQuestion: {question}?"
gold: {field: answer, map: {true: "yes", false: "no"}}
judge: {kind: exact, answers: answer, map: {true: "yes", false: "no"}}
""")
DROP = _real_task("drop", "drop/validation_subset1000.jsonl", """\
  id: query_id
prompt: {question: question, context: passage}
gold: {field: answers}
judge: {kind: KIND, answers: answers, threshold: 0.8}
""")


def test_boolq_booleans_map_to_words(tmp_path, data_dir):
    spec = tmp_path / "boolq.yaml"
    spec.write_text(BOOLQ)
    task = FileTask(spec)
    train = task.load_split("train", data_dir).examples
    assert {task.gold_response(ex) for ex in train} == {"yes", "no"}
    ex_true = next(ex for ex in train if ex["fields"]["answer"] is True)
    assert task.judge(ex_true, "Yes.").correct and not task.judge(ex_true, "No.").correct
    # a CSV cell "False" is the same key as YAML's false
    cells = ["False", "True", "true", "false", "FALSE", "TRUE"] * 3
    (tmp_path / "b.csv").write_text("question,answer\n" + "".join(f"q{i},{c}\n" for i, c in enumerate(cells)))
    spec.write_text(BOOLQ.replace('"{data_dir}/boolq/validation.jsonl"', "b.csv")
                    .replace("{passage}", "").replace("test_fraction: 0.5", "test_fraction: 0.3"))
    task = FileTask(spec)
    golds = [task.gold_response(ex) for s in ("train", "test") for ex in task.load_split(s, None).examples]
    assert golds == ["no" if c.lower() == "false" else "yes" for c in cells] or sorted(golds) == sorted(
        "no" if c.lower() == "false" else "yes" for c in cells)


@pytest.mark.parametrize("kind", ["f1", "contains", "exact"])
def test_drop_multi_span_judged_span_by_span(tmp_path, data_dir, kind):
    spec = tmp_path / "drop.yaml"
    spec.write_text(DROP.replace("KIND", kind).replace(", threshold: 0.8", ", threshold: 0.8" if kind == "f1" else ""))
    task = FileTask(spec)
    by_question = {ex["fields"]["question"]: ex for s in ("train", "test")
                   for ex in task.load_split(s, data_dir).examples}
    ex = by_question["Which countries had less than 4.5 million people who were born outside the EU?"]
    assert task.gold_response(ex) == "Spain, Italy, the Netherlands"
    assert task.judge(ex, "Spain, Italy, the Netherlands").correct
    assert task.judge(ex, "Germany, France and the United Kingdom").correct        # the second annotation
    assert not task.judge(ex, "Spain").correct                                       # one span of three
    assert not task.judge(ex, "Spain, Italy").correct


def test_drop_official_multi_span_rule():
    """Values DROP's evaluator (drop_eval.get_metrics) gives: spans aligned one to one, mean over the larger count."""
    assert drop_metrics(["Spain"], ["Spain", "Italy", "the Netherlands"]) == (0.0, 0.33)
    assert drop_metrics(["Italy", "Spain", "Netherlands"], ["Spain", "Italy", "the Netherlands"]) == (1.0, 1.0)
    assert drop_metrics(["Spain", "Italy", "France", "Peru"], ["Spain", "Italy"]) == (0.0, 0.5)
    assert drop_metrics(["12 yards"], ["13 yards"]) == (0.0, 0.0)             # a gold number must be matched
    assert drop_metrics(["the 12"], ["12.0"]) == (1.0, 1.0)                   # numbers compare as floats
    assert response_spans("Spain, Italy and the Netherlands.") == ["Spain", "Italy", "the Netherlands"]
    assert judge_spans("Spain, Italy", [["Spain", "Italy", "Netherlands"]], "f1", 0.5).correct
    assert not judge_spans("Spain", [["Spain", "Italy", "Netherlands"]], "f1", 0.5).correct
    assert judge_spans("Spain", [["Spain"], ["Italy", "France"]], "exact").correct

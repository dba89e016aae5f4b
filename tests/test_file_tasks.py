"""Tasks declared in YAML files: validation with errors naming file, key and row; every judge kind; seeded splits;
recipes; the examples over the shared data; and the export of S3FT targets as chat datasets a trainer loads."""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, run_repro

from evals.tasks import get_task
from evals.tasks.from_file import FileTask, TaskSpecError

EXAMPLES = REPO / "examples" / "tasks"


def _spec(tmp_path: Path, body: str, rows: list[dict] | None = None, *, name: str = "t.yaml",
          data: str = "rows.jsonl") -> Path:
    if rows is not None:
        (tmp_path / data).write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


QA_ROWS = [{"qid": f"q{i}", "q": f"Question {i}?", "a": [f"answer {i}", f"alias {i}"]} for i in range(6)]
QA = """\
name: qa
version: v1
data: {file: rows.jsonl, split: {test_fraction: 0.5, seed: 7}, id: qid}
prompt: {question: q}
gold: {field: a}
judge: {kind: contains, answers: a}
"""


# --- validation: errors name the spec file, the key and the row ---------------------------------------------------

@pytest.mark.parametrize("body, needle", [
    (QA.replace("version: v1\n", "version: v1\ncolour: red\n"), "unknown key(s) ['colour']"),
    (QA.replace("kind: contains", "kind: fuzzy"), "judge.kind: 'fuzzy' is not one of"),
    (QA.replace("judge: {kind: contains, answers: a}", "judge: {kind: f1, answers: a, threshold: 2}"),
     "judge.threshold: must be a number in (0, 1]"),
    (QA.replace("version: v1\n", ""), "missing key(s) ['version']"),
    (QA.replace("data: {file: rows.jsonl,", "data: {file: {data_dir}/rows.jsonl,"), "quote values"),
    (QA.replace("judge: {kind: contains, answers: a}", "judge: {kind: regex, pattern: '(unclosed', answers: a}"),
     "judge.pattern: invalid regular expression"),
    (QA.replace("gold: {field: a}", "gold: {field: a, template: x}"), "gold: give exactly one of field or template"),
    (QA.replace("name: qa", "name: squad"), "is a built-in task"),
])
def test_bad_spec_structure_names_file_and_key(tmp_path, body, needle):
    path = _spec(tmp_path, body, QA_ROWS)
    with pytest.raises(TaskSpecError) as err:
        FileTask(path)
    assert str(path) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize("mutate, key, line", [
    (lambda rows: rows[3].pop("a"), "gold.field", 4),                          # a gold field missing on row 4
    (lambda rows: rows[2].update(q=["not", "text"]), "prompt.question", 3),    # a prompt field of the wrong type
    (lambda rows: rows[5].update(qid="q0"), "data.id", 6),                     # duplicate id
    (lambda rows: rows[1].update(a=[]), "gold.field", 2),                      # empty gold
    (lambda rows: rows[4].update(a=[" "]), "judge.answers", 5),                # no usable alias
])
def test_bad_row_names_file_key_and_row(tmp_path, mutate, key, line):
    rows = json.loads(json.dumps(QA_ROWS))
    mutate(rows)
    body = QA if key != "judge.answers" else QA.replace("gold: {field: a}", "gold: {template: 'x'}")
    path = _spec(tmp_path, body, rows)
    with pytest.raises(TaskSpecError) as err:
        FileTask(path).load_split("train", None)
    msg = str(err.value)
    assert str(path) in msg and key in msg and f"rows.jsonl:{line}" in msg, msg


def test_template_errors_and_data_dir_errors_name_key_and_row(tmp_path):
    body = QA.replace("prompt: {question: q}", "prompt: {template: 'Q: {{ q }} {{ missing_field }}'}")
    path = _spec(tmp_path, body, QA_ROWS)
    with pytest.raises(TaskSpecError, match=r"rows.jsonl:1: prompt: UndefinedError: 'missing_field'"):
        FileTask(path).load_split("test", None)
    path = _spec(tmp_path, QA.replace("file: rows.jsonl", "file: '{data_dir}/rows.jsonl'"), QA_ROWS)
    with pytest.raises(TaskSpecError, match=r"data.file: .*uses \{data_dir\} but no data directory"):
        FileTask(path).load_split("test", None)
    assert len(FileTask(path).load_split("test", tmp_path).examples) + \
        len(FileTask(path).load_split("train", tmp_path).examples) == 6
    (tmp_path / "rows.jsonl").write_text('{"qid": "q0", "q": "x", "a": ["y"]}\n{not json\n')
    with pytest.raises(TaskSpecError, match=r"rows.jsonl:2: invalid JSON"):
        FileTask(path).load_split("test", tmp_path)


def test_cli_reports_a_bad_spec_as_an_error_not_a_traceback(tmp_path):
    rows = json.loads(json.dumps(QA_ROWS))
    rows[2].pop("a")
    path = _spec(tmp_path, QA, rows)
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "qa/q0", "response": "x"}) + "\n")
    proc = run_repro("judge", "--task", str(path), "--predictions", str(tmp_path / "p.jsonl"), "--quiet")
    assert proc.returncode == 2
    assert f"error: {path}: {tmp_path / 'rows.jsonl'}:3: gold.field: field 'a' is missing" in proc.stderr, proc.stderr


# --- splits, ids, CSV ------------------------------------------------------------------------------------------

def test_seeded_split_is_disjoint_stable_and_grouped(tmp_path):
    rows = [{"title": f"t{i % 10}", "q": f"q{i}", "a": "x"} for i in range(40)]
    body = QA.replace("split: {test_fraction: 0.5, seed: 7}, id: qid", "split: {test_fraction: 0.5, seed: 7, "
                      "group_by: title}")
    path = _spec(tmp_path, body, rows)
    task = FileTask(path)
    train, test = task.load_split("train", None).examples, task.load_split("test", None).examples
    assert len(train) + len(test) == 40 and not {e["id"] for e in train} & {e["id"] for e in test}
    assert not {e["fields"]["title"] for e in train} & {e["fields"]["title"] for e in test}
    assert [e["id"] for e in FileTask(path).load_split("test", None).examples] == [e["id"] for e in test]
    assert train and test and train[0]["id"] == "qa/" + str(rows.index(train[0]["fields"]))


def test_csv_with_json_list_cells_and_python_templates(tmp_path):
    (tmp_path / "train.csv").write_text('q,answers,n\nWho?,"[""Ann"", ""Anna""]",3\nWhat?,Bob,4\n')
    (tmp_path / "test.csv").write_text('q,answers,n\nWhere?,"[""Rome""]",5\n')
    path = _spec(tmp_path, """\
        name: csvqa
        version: 2
        data: {train: train.csv, test: test.csv}
        prompt: {template: "Q{n}: {q}", format: python}
        gold: {template: "It is {answers[0]}."}
        judge: {kind: exact, answers: answers}
        max_new_tokens: 12
        """)
    task = get_task(str(path))
    exs = task.load_split("train", None).examples
    assert [e["id"] for e in exs] == ["csvqa/train/0", "csvqa/train/1"]
    assert task.predict_messages(exs[0]) == [{"role": "user", "content": "Q3: Who?"}]
    assert task.gold_response(exs[0]) == "It is Ann."
    assert [task.judge(exs[0], r).correct for r in ("anna", "The Anna", "Anna is right")] == [True, True, False]
    assert task.max_new_tokens == 12 and task.paraphrase_max_new_tokens == 44
    assert task.template_version == "csvqa-2" and task.describe()["spec_sha256"]


# --- every judge kind reuses the suite's judges --------------------------------------------------------------

def _one_row_task(tmp_path, judge: str, row: dict, prompt: str = "{{ q }}") -> tuple[FileTask, dict]:
    path = _spec(tmp_path, f"""\
        name: one
        version: v1
        data: {{train: rows.jsonl, test: rows.jsonl}}
        prompt: {{template: "{prompt}"}}
        gold: {{template: "gold"}}
        judge: {judge}
        """, [row])
    task = FileTask(path)
    return task, task.load_split("test", None).examples[0]


def test_numeric_f1_regex_judges(tmp_path):
    task, ex = _one_row_task(tmp_path, "{kind: numeric, answer: sol}", {"q": "2+2", "sol": "2+2=4\n#### 4"})
    assert [task.judge(ex, r).correct for r in ("The answer is 4.", "it is 4.0", "5")] == [True, True, False]
    task, ex = _one_row_task(tmp_path, "{kind: numeric, answer: n}", {"q": "x", "n": 1234})
    assert task.judge(ex, "$1,234").correct
    task, ex = _one_row_task(tmp_path, "{kind: f1, answers: a, threshold: 0.7}", {"q": "x", "a": ["Sunset Boulevard"]})
    assert [task.judge(ex, r).correct for r in ("Sunset Boulevard", "the Sunset Boulevard musical by Lloyd Webber",
                                                "Sunset")] == [True, False, False]
    task, ex = _one_row_task(tmp_path, r"{kind: regex, pattern: 'Final: (\w+)', answers: a}", {"q": "x", "a": "Blue"})
    assert [task.judge(ex, r).correct for r in ("Final: red. Final: blue", "blue", "Final: red")] == \
        [True, False, False]
    task, ex = _one_row_task(tmp_path, "{kind: regex, pattern_field: re}", {"q": "x", "re": r"^\d{3}-\d{4}$"})
    assert [task.judge(ex, r).correct for r in ("555-1234", "call 555-1234")] == [True, False]


def test_choice_judge_labels_and_indices(tmp_path):
    row = {"q": "Which?", "choices": ["red", "green", "blue"], "label": 2}
    task, ex = _one_row_task(tmp_path, "{kind: choice, answer: label, choices: choices}", row)
    assert [task.judge(ex, r).correct for r in ("C", "The answer is C.", "(C) blue", "I pick blue.", "A cat",
                                                "B. green", "the answer is a dog")] == \
        [True, True, True, True, False, False, False]
    arc = {"q": "x", "question": {"choices": [{"text": "one", "label": "1"}, {"text": "two", "label": "2"}]},
           "answerKey": "2"}
    task, ex = _one_row_task(tmp_path, "{kind: choice, answer: answerKey, choices: question.choices}", arc)
    assert task.judge(ex, "The answer is 2.").correct and not task.judge(ex, "1.").correct


def test_code_judge_runs_asserts_in_the_sandbox(tmp_path):
    row = {"q": "add", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}
    task, ex = _one_row_task(tmp_path, "{kind: code, tests: tests, timeout: 5}", row)
    good, bad = "```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```"
    verdicts = task.judge_many([ex, ex], [good, bad])
    assert [v.correct for v in verdicts] == [True, False] and "AssertionError" in verdicts[1].reason


@dataclass
class _Out:
    text: str
    finish_reason: str = "stop"


class _FakeGenerator:
    def __init__(self, replies):
        self.replies = replies
        self.prompts = []

    def generate(self, prompts, params, *, tag, progress=True):
        self.prompts += prompts
        return [_Out(r) for r in self.replies]


def test_llm_judge_uses_the_attached_model(tmp_path):
    from evals.judges.llm import LLMJudge  # noqa: PLC0415

    task, ex = _one_row_task(tmp_path, "{kind: llm, answers: a, question: q}", {"q": "Capital of France?",
                                                                                 "a": ["Paris"]})
    with pytest.raises(RuntimeError, match="no judge model is attached"):
        task.judge(ex, "Paris")
    gen = _FakeGenerator(["No, that is a different city."])
    task.use_llm_judge(LLMJudge(gen))
    assert task.judge(ex, "Lyon").correct is False
    assert "Question: Capital of France?" in gen.prompts[0][0]["content"]
    assert "Gold answer: Paris" in gen.prompts[0][0]["content"]


def test_paraphrase_template_and_validity_rule(tmp_path):
    path = _spec(tmp_path, QA + """\
paraphrase:
  template: "Rewrite for {{ q }}: {{ gold }} / {{ prompt }}"
  validity: {max_words: 4, must_not_match: '(?i)as an ai', banned_phrases: [Reference]}
""", QA_ROWS)
    task = FileTask(path)
    ex = task.load_split("train", None).examples[0]
    content = task.paraphrase_messages(ex)[0]["content"]
    assert content.startswith(f"Rewrite for {ex['fields']['q']}: {ex['fields']['a'][0]} / Answer the following")
    assert task.paraphrase_rejection(ex, "It is answer 1.") is None
    assert "longer than 4 words" in task.paraphrase_rejection(ex, "one two three four five")
    assert "must_not_match" in task.paraphrase_rejection(ex, "As an AI: x")
    assert "reference" in task.paraphrase_rejection(ex, "the reference")


# --- registry, recipes, ls ---------------------------------------------------------------------------------------

def test_recipe_takes_task_files_by_path_or_file_key(tmp_path):
    from repro.driver.recipes import load_recipe  # noqa: PLC0415

    smoke = (REPO / "repro" / "recipes" / "smoke.yaml").read_text()
    tasks = ("tasks:\n  ../examples_link/triviaqa.yaml: {train: 3, test: 3}\n"
             "  arc_easy: {file: %s, train: 2}\n" % (EXAMPLES / "arc_easy.yaml"))
    (tmp_path / "examples_link").symlink_to(EXAMPLES)
    (tmp_path / "r").mkdir()
    recipe_path = tmp_path / "r" / "mine.yaml"
    head, _, rest = smoke.partition("tasks:")
    rest = rest[rest.index("\ntrain:") + 1:]
    recipe_path.write_text(head + tasks + rest)
    r = load_recipe(str(recipe_path), ["tasks.triviaqa.test=5"])
    assert list(r.tasks) == ["triviaqa", "arc_easy"]
    assert r.tasks["triviaqa"]["test"] == 5 and r.tasks["triviaqa"]["file"].endswith("triviaqa.yaml")
    recipe_path.write_text(head + "tasks:\n  other_name: {file: %s}\n" % (EXAMPLES / "arc_easy.yaml") + rest)
    with pytest.raises(ValueError, match="declares name 'arc_easy'"):
        load_recipe(str(recipe_path))


def test_ls_tasks_lists_task_files_and_flags_invalid_ones(tmp_path):
    import shutil  # noqa: PLC0415

    for f in EXAMPLES.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.yaml").write_text("name: broken\nversion: 1\n")
    proc = run_repro("ls", "tasks", "--tasks-dir", str(tmp_path))
    assert proc.returncode == 2, proc.stderr              # an invalid task file is an error (issue 29) ...
    assert "arc_easy" in proc.stdout and "choice" in proc.stdout and "triviaqa" in proc.stdout
    assert "(invalid)" in proc.stdout and "missing key(s)" in proc.stdout     # ... listed beside the valid ones
    assert proc.stderr.strip().splitlines() == [f"error: 1 of 3 task files in {tmp_path} are invalid; first: "
                                                f"{tmp_path / 'broken.yaml'}: missing key(s) ['data', 'gold', "
                                                "'judge', 'prompt']"]
    assert "not read (its paths use {data_dir}: pass --data-dir)" in proc.stdout


def test_example_tasks_load_over_the_shared_data(data_dir):
    arc = get_task(str(EXAMPLES / "arc_easy.yaml"))
    train, test = arc.load_split("train", data_dir).examples, arc.load_split("test", data_dir).examples
    assert (len(train), len(test)) == (570, 2376)
    ex = train[0]
    assert arc.judge(ex, arc.gold_response(ex)).correct
    assert "\nA. " in arc.predict_messages(ex)[-1]["content"]
    tqa = get_task(str(EXAMPLES / "triviaqa.yaml"))
    tr, te = tqa.load_split("train", data_dir).examples, tqa.load_split("test", data_dir).examples
    assert len(tr) + len(te) == 7993 and not {e["id"] for e in tr} & {e["id"] for e in te}
    assert tqa.judge(te[0], f"I think it is {te[0]['fields']['answer']['aliases'][-1]}.").correct


# --- export ------------------------------------------------------------------------------------------------------

def test_export_formats_keep_ids_sources_and_turns():
    from repro.driver.export import FORMATS, to_row  # noqa: PLC0415

    rec = {"id": "t/1", "source": "paraphrase", "target": "Paris.",
           "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}]}
    rows = {f: to_row(rec, f, {"task": "t"}) for f in FORMATS}
    for row in rows.values():
        assert row["metadata"] == {"id": "t/1", "source": "paraphrase", "task": "t"}
    assert rows["messages"]["messages"][-1] == {"role": "assistant", "content": "Paris."}
    assert rows["prompt_completion"]["completion"] == [{"role": "assistant", "content": "Paris."}]
    assert rows["alpaca"] | {"metadata": None} == {"instruction": "Capital?", "input": "", "output": "Paris.",
                                                   "system": "Be brief.", "history": [], "metadata": None}
    assert [t["from"] for t in rows["sharegpt"]["conversations"]] == ["system", "human", "gpt"]


def test_triviaqa_s3ft_targets_from_its_yaml_on_the_tiny_model(tmp_path, data_dir, capfd):
    from repro.cli import main  # noqa: PLC0415

    assert main(["build", "--task", str(EXAMPLES / "triviaqa.yaml"), "--method", "s3ft", "--model", "tiny",
                 "--limit", "3", "--max-new-tokens", "8", "--paraphrase-max-new-tokens", "8", "--data-dir",
                 str(data_dir), "--work-dir", str(tmp_path / "runs"), "--quiet", "--export", "sharegpt"]) == 0
    out = capfd.readouterr().out
    folder = tmp_path / "runs" / "adhoc" / "triviaqa" / "s3ft" / "targets"
    targets = [json.loads(line) for line in (folder / "targets.jsonl").open()]
    cands = [json.loads(line) for line in (folder / "candidates.jsonl").open()]
    assert len(targets) == 3 and all(t["id"].startswith("triviaqa/") for t in targets)
    assert all({"model", "gold"} <= set(c["candidates"]) for c in cands)           # own answers were judged
    rows = [json.loads(line) for line in (folder / "triviaqa.s3ft.sharegpt.jsonl").open()]
    assert [r["metadata"]["id"] for r in rows] == [t["id"] for t in targets] and "exported 3 rows (sharegpt)" in out


# --- compare: base vs SFT vs S3FT on a file task, through the grid driver --------------------------------------

@pytest.mark.slow
def test_compare_and_export_of_a_yaml_task_end_to_end(tmp_path, data_dir, capfd):
    """ARC-Easy from its YAML only, on the tiny model: `repro compare` runs base, SFT and S3FT through the grid
    driver and prints paper_tables' comparison; the same command again recomputes nothing (resumable). Then
    (done-when) the S3FT targets of that run are exported in each format, and the messages export loads with
    `datasets` and renders through a chat template."""
    import datasets  # noqa: PLC0415

    from repro.cli import main  # noqa: PLC0415  (in-process: one interpreter start-up for every command)
    from repro.runtime.models import load_tokenizer  # noqa: PLC0415

    work, res = tmp_path / "runs", tmp_path / "results"
    common = ["--data-dir", str(data_dir), "--work-dir", str(work), "--results-dir", str(res), "--quiet"]
    args = ["compare", "--task", str(EXAMPLES / "arc_easy.yaml"), "--preset", "smoke", "--model", "tiny",
            "--train", "3", "--test", "3", *common, "evaluation.benchmarks={hellaswag: {limit: 2}}",
            "evaluation.forgetting_prompts=2", "evaluation.benchmark_batch_size=2",
            "tasks.arc_easy.max_new_tokens=8", "tasks.arc_easy.paraphrase_max_new_tokens=8"]
    assert main([a for a in args if a != "--quiet"]) == 0     # with the progress display
    proc = capfd.readouterr()
    results = res / "compare-arc_easy" / "arc_easy"
    for method in ("base", "sft", "s3ft"):
        doc = json.loads((results / method / "seed0" / "result.json").read_text())
        assert doc["in_domain"]["n"] == 3 and doc["in_domain"]["task"]["judge"] == "choice"
        assert doc["in_domain"]["task"]["spec_sha256"]
    assert "ETA" in proc.err and "done: 3/3 cells" in proc.err
    assert "generation on hf (float32)" in proc.err          # the engine and dtype this run generates with
    assert "### Table 2: in-domain" in proc.out and "arc_easy ours" in proc.out
    assert "### Paired comparisons" in proc.out and "s3ft vs sft" in proc.out and "hellaswag" in proc.out
    mtime = (results / "s3ft" / "seed0" / "result.json").stat().st_mtime_ns
    assert main(args) == 0
    again = capfd.readouterr()
    assert (results / "s3ft" / "seed0" / "result.json").stat().st_mtime_ns == mtime
    assert "evaluate" not in again.err and "s3ft vs sft" in again.out

    out = tmp_path / "export"
    assert main(["build", "--preset", str(work / "compare-arc_easy" / "recipe.yaml"), "--task", "arc_easy",
                 "--method", "s3ft", *common, "--export", "all", "--export-dir", str(out)]) == 0
    assert "reused targets" in capfd.readouterr().out
    targets = [json.loads(line) for line in
               (work / "compare-arc_easy" / "arc_easy" / "s3ft" / "targets" / "targets.jsonl").open()]
    assert len(targets) == 3 and all(t["id"].startswith("arc_easy/") for t in targets)
    for fmt in ("messages", "prompt_completion", "alpaca", "sharegpt"):
        rows = [json.loads(line) for line in (out / f"arc_easy.s3ft.{fmt}.jsonl").open()]
        assert [(r["metadata"]["id"], r["metadata"]["source"]) for r in rows] == \
            [(t["id"], t["source"]) for t in targets]
        assert all(r["metadata"]["task"] == "arc_easy" and r["metadata"]["method"] == "s3ft" for r in rows)
    ds = datasets.load_dataset("json", data_files=str(out / "arc_easy.s3ft.messages.jsonl"), split="train")
    assert ds.num_rows == 3 and set(ds.column_names) == {"messages", "metadata"}
    tok = load_tokenizer("tiny")
    for row, t in zip(ds, targets):
        text = tok.apply_chat_template(row["messages"], tokenize=False)
        assert t["target"] in text and t["prompt"][-1]["content"] in text


def test_target_building_applies_the_spec_validity_rule_to_paraphrases(tmp_path):
    """methods.targets rejects a paraphrase the task's own validity rule refuses, even when the judge accepts it."""
    from methods.targets import TargetContext  # noqa: PLC0415
    from repro.runtime.generate import DecodingParams, GenerationStats  # noqa: PLC0415

    path = _spec(tmp_path, QA + "paraphrase: {validity: {max_words: 3}}\n", QA_ROWS)
    task = FileTask(path)
    exs = task.load_split("train", None).examples[:2]

    class Gen(_FakeGenerator):
        stats = GenerationStats()

        def describe(self):
            return {}

    gen = Gen([f"{exs[0]['fields']['a'][0]}", f"well, I would say {exs[1]['fields']['a'][0]} here"])
    ctx = TargetContext(task, exs, lambda: gen, DecodingParams(max_new_tokens=8), DecodingParams(max_new_tokens=8),
                        cache=None, progress=False)
    short, long_ = ctx.paraphrases(exs)
    assert short.accepted and not long_.accepted
    assert long_.reason == "invalid: longer than 3 words" and long_.rejected_by == "validity"

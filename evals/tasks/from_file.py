"""A task declared in a YAML file: data, prompt, gold response and judge, with no Python to write.

The reference of every key (type, default, example) is docs/task-spec.md; this docstring is a summary.

A spec is usable wherever a task name is (``--task my_task.yaml``, a recipe's ``tasks:`` mapping, ``repro judge``).
It is checked twice: its structure when it is read (unknown keys, wrong types, an unknown judge), and every row of
its data when a split is loaded (each field the prompt, gold and judge use must resolve and have the right type).
Every error names the spec file, the key and - for data - the data file and row.

    name: arc_easy                    # results/<preset>/arc_easy/...; lower-case letters, digits, _ and -
    description: ARC-Easy science questions, answered with a letter
    version: arc_easy-v1              # bump when any prompt changes: part of every cache key, recorded in results
    data:
      train: "{data_dir}/arc/ARC-Easy-Dev.jsonl"   # JSONL or CSV; relative paths: against this file's folder;
      test: "{data_dir}/arc/ARC-Easy-Test.jsonl"   # {data_dir}: --data-dir / $S3FT_DATA_DIR (quote such paths)
      # or one file and a seeded split:  file: qa.csv  +  split: {test_fraction: 0.5, seed: 1234, group_by: title}
      id: id                          # optional: a field with a stable id (default: the row number)
    prompt:                           # a template over the row's fields ...
      format: jinja                   # jinja | python (str.format; default: jinja when the text has {{ or {%)
      template: "{{ question.stem }} ..."
      system: optional system message
      # ... or just field names:  question: question  [context: passage]
    gold: {template: "The answer is {{ answerKey }}."}   # or {field: answer} (a list: its first item; a list of
                                      # lists: the first annotation's spans joined); + map: {true: yes, false: no}
    judge: {kind: choice, answer: answerKey, choices: question.choices}
    paraphrase:                       # optional
      template: "..."                 # over the row's fields plus `prompt` and `gold`; default: SDFT's rewrite prompt
      validity: {max_words: 60, must_match: "regex", must_not_match: "regex", banned_phrases: [...]}
    max_new_tokens: 16
    paraphrase_max_new_tokens: 48

Judges (each reuses the suite's judge of that kind, evals/judges/):
    numeric  {answer: FIELD}                       final number (GSM8K's judge); "#### N" solutions accepted
    exact    {answers: FIELD}                      SQuAD-normalised equality with any alias
    contains {answers: FIELD}                      exact or whole-token containment of any alias (SQuAD/NQ's judge)
    f1       {answers: FIELD, threshold: 0.5}      best official SQuAD token F1 against the aliases >= threshold
    regex    {pattern: RE, answers: FIELD}         last match (group 1) normalised == an alias
             {pattern_field: FIELD}                or: the response matches the item's own regex
    choice   {answer: FIELD, choices: FIELD}       letter (or label) of a multiple-choice item; answer is a label or
                                                   a 0-based index; choices a list of texts or of {text, label}
    code     {tests: FIELD, setup: FIELD, timeout: 10}  asserts run on the response's code in the sandbox (MBPP's)
    llm      {answers: FIELD, question: FIELD, model: base}  the LLM judge (base = the base model, as the paper)
Judges with answer/answers also take ``map`` (data values -> words, e.g. BoolQ's booleans); answers may be aliases (a
list of strings), or annotations of several spans (a list of lists, DROP's), judged span by span, best annotation
(``multi_span: true``: a flat list is one annotation's spans).
A FIELD is a dotted path into the row (``answer.aliases``, ``question.stem``; list items by index). In CSV files a
cell that holds a list is written as JSON (``["a", "b"]``).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from evals.data import (
    DataError,
    LoadedRows,
    file_sha256,
    group_split,
    load_yaml_text,
    parse_json_line,
    read_text_file,
    verify_file,
)
from evals.judges import Verdict, code, llm, numeric, pattern, text
from evals.judges.code import judge_code_many
from evals.judges.llm import LLMJudge
from evals.judges.numeric import gold_answer, normalize_number
from evals.tasks.base import Split, Task
from evals.tasks.reading import PARAPHRASE
from evals.tasks.registry import TASKS
from repro.runtime.generate import make_generator

SPEC_SUFFIXES = (".yaml", ".yml")
_NAME = re.compile(r"\A[a-z0-9][a-z0-9_\-]*\Z")
_TOP_KEYS = {"name", "description", "version", "data", "prompt", "gold", "judge", "paraphrase", "max_new_tokens",
             "paraphrase_max_new_tokens", "stop"}
_DATA_KEYS = {"train", "test", "file", "split", "id"}
_SPLIT_KEYS = {"test_fraction", "seed", "group_by"}
_PROMPT_KEYS = {"template", "format", "system", "question", "context"}
_GOLD_KEYS = {"field", "template", "format", "map", "join"}
_PARA_KEYS = {"template", "format", "validity"}
_VALIDITY_KEYS = {"max_words", "max_chars", "must_match", "must_not_match", "banned_phrases"}
JUDGE_KEYS: dict[str, tuple[set[str], set[str]]] = {      # kind -> (required keys, optional keys)
    "numeric": ({"answer"}, {"map"}),
    "exact": ({"answers"}, {"map", "multi_span"}),
    "contains": ({"answers"}, {"map", "multi_span"}),
    "f1": ({"answers"}, {"threshold", "map", "multi_span"}),
    "regex": (set(), {"pattern", "answers", "pattern_field", "map", "multi_span"}),
    "choice": ({"answer", "choices"}, {"map"}),
    "code": ({"tests"}, {"setup", "timeout"}),
    "llm": ({"answers"}, {"question", "model", "map", "multi_span"}),
}

DEFAULT_PROMPT = "Answer the following question.\n\nQuestion: {question}"
DEFAULT_READING_PROMPT = "Read the passage and answer the question.\n\nPassage: {context}\n\nQuestion: {question}"


def is_task_file(name: str) -> bool:
    return str(name).endswith(SPEC_SUFFIXES)


class TaskSpecError(DataError):
    """A task spec or its data is invalid; the message names the spec file, the key and (for data) the row."""


# --- field paths and templates -----------------------------------------------------------------------------------

_MISSING = object()


def get_path(row: Any, path: str) -> Any:
    """The value at a dotted path (``answer.aliases``, ``choices.0``), or _MISSING."""
    cur = row
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _no_null(value: Any) -> Any:
    if value is None:
        raise TaskSpecError("the template prints a null value (a JSON null, or a cell the CSV row lacks); fill it "
                            "in the data or guard it in the template")
    return value


class _StrictFormatter(string.Formatter):
    """str.format that refuses to print a null field as "None"."""

    def get_field(self, field_name: str, args: Sequence, kwargs: dict) -> Any:
        obj, used = super().get_field(field_name, args, kwargs)
        if obj is None:
            raise TaskSpecError(f"field {field_name!r} is null (a JSON null, or a cell the CSV row lacks)")
        return obj, used


class Template:
    """A prompt/gold template: Python str.format or Jinja (sandboxed, undefined fields are errors)."""

    def __init__(self, text: str, fmt: str | None, where: str) -> None:
        self.text = text
        self.format = fmt or ("jinja" if ("{{" in text or "{%" in text) else "python")
        if self.format not in ("jinja", "python"):
            raise TaskSpecError(f"{where}.format: must be 'jinja' or 'python', not {self.format!r}")
        if self.format == "jinja":
            env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False,
                                                finalize=_no_null)
            try:
                self._jinja = env.from_string(text)
            except TemplateSyntaxError as e:
                raise TaskSpecError(f"{where}.template: Jinja syntax error on line {e.lineno}: {e.message}") \
                    from None
        else:
            try:
                list(string.Formatter().parse(text))
            except ValueError as e:
                raise TaskSpecError(f"{where}.template: not a valid Python format string ({e}); write a literal "
                                    "brace as {{ or }}, or set format: jinja") from None

    def render(self, fields: dict) -> str:
        """Raises KeyError / ValueError style errors as TaskSpecError-free exceptions; the caller adds the row."""
        if self.format == "python":
            return _StrictFormatter().vformat(self.text, (), fields)
        return self._jinja.render(**fields)


# --- the spec ---------------------------------------------------------------------------------------------------

def _check_keys(d: Any, allowed: set[str], where: str, required: set[str] = frozenset()) -> dict:
    if not isinstance(d, dict):
        raise TaskSpecError(f"{where}: must be a mapping, got {type(d).__name__}")
    unknown = set(d) - allowed
    if unknown:
        raise TaskSpecError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = set(required) - set(d)
    if missing:
        raise TaskSpecError(f"{where}: missing key(s) {sorted(missing)}")
    return d


def _str(d: dict, key: str, where: str, *, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise TaskSpecError(f"{where}.{key}: missing")
        return None
    if isinstance(v, dict) and len(v) == 1 and next(iter(v.values())) is None:
        raise TaskSpecError(f"{where}.{key}: YAML read {{{next(iter(v))}}} as a mapping; quote values that start "
                            f"with '{{' (e.g. \"{{data_dir}}/...\")")
    if not isinstance(v, str) or not v.strip():
        raise TaskSpecError(f"{where}.{key}: must be a non-empty string, got {v!r}")
    return v


def _int(d: dict, key: str, where: str, lo: int = 1) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise TaskSpecError(f"{where}.{key}: must be an integer >= {lo}, got {v!r}")
    return v


class FileTask(Task):
    """A `Task` built from a YAML spec (see the module docstring for the format)."""

    def __init__(self, path: str | Path, **options: Any) -> None:
        self.path = Path(path).expanduser().resolve()
        if options:
            raise TaskSpecError(f"{self.path}: {', '.join(sorted(options))}: a task file's judge and settings are "
                                "set in the file itself (its judge: key), not on the command line; drop the option")
        raw_text = read_text_file(self.path, "task spec file")
        self.spec_sha256 = hashlib.sha256(raw_text.encode("utf-8")).hexdigest()
        try:
            spec = load_yaml_text(raw_text, self.path)
        except DataError as e:
            hint = (" (quote values that start with '{', e.g. \"{data_dir}/...\")" if "{data_dir}" in raw_text
                    else "")
            raise TaskSpecError(f"{e}{hint}") from None
        if spec is None:
            raise TaskSpecError(f"{self.path}: the task spec file is empty; see docs/task-spec.md for its keys")
        self._parse(_check_keys(spec, _TOP_KEYS, str(self.path), {"name", "version", "data", "prompt", "gold",
                                                                   "judge"}))
        self._rows: dict[tuple[str, Path | None], LoadedRows] = {}
        self._llm = None
        self.judge_model = getattr(self, "judge_model", None)

    # --- parsing (structure only; rows are checked when loaded) ----------------------------------------------
    def _parse(self, spec: dict) -> None:
        f = str(self.path)
        self.name = _str(spec, "name", f, required=True)
        if not _NAME.match(self.name):
            raise TaskSpecError(f"{f}: name: {self.name!r} must be lower-case letters, digits, '_' or '-' (it names "
                                "result folders)")

        if self.name in TASKS:
            raise TaskSpecError(f"{f}: name: {self.name!r} is a built-in task; choose another name")
        self.description = (_str(spec, "description", f) or f"task from {self.path.name}").strip()
        version = spec.get("version")
        if not isinstance(version, (str, int, float)) or isinstance(version, bool) or not str(version).strip():
            raise TaskSpecError(f"{f}: version: must be a version string (bump it when a prompt changes)")
        self.template_version = f"{self.name}-{version}" if not str(version).startswith(self.name) else str(version)
        for key in ("max_new_tokens", "paraphrase_max_new_tokens"):
            v = _int(spec, key, f)
            if v is not None:
                setattr(self, key, v)
        if "paraphrase_max_new_tokens" not in spec and "max_new_tokens" in spec:
            self.paraphrase_max_new_tokens = max(self.max_new_tokens + 32, self.max_new_tokens * 3 // 2)
        stop = spec.get("stop", [])
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise TaskSpecError(f"{f}: stop: must be a list of non-empty strings")
        self.stop = tuple(stop)

        d = _check_keys(spec["data"], _DATA_KEYS, f"{f}: data")
        self.id_field = _str(d, "id", f"{f}: data")
        if "file" in d:
            if "train" in d or "test" in d:
                raise TaskSpecError(f"{f}: data: give either train + test files or one file + split, not both")
            self.files = {"all": _str(d, "file", f"{f}: data")}
            sp = _check_keys(d.get("split") or {}, _SPLIT_KEYS, f"{f}: data.split", {"test_fraction"})
            frac = sp["test_fraction"]
            if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0 < frac < 1:
                raise TaskSpecError(f"{f}: data.split.test_fraction: must be a number between 0 and 1, got {frac!r}")
            seed = sp.get("seed", 1234)
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise TaskSpecError(f"{f}: data.split.seed: must be an integer, got {seed!r}")
            self.split_rule = {"test_fraction": float(frac), "seed": seed,
                               "group_by": _str(sp, "group_by", f"{f}: data.split")}
        else:
            if "split" in d:
                raise TaskSpecError(f"{f}: data.split: only with data.file (one file split in two)")
            if "train" not in d or "test" not in d:
                raise TaskSpecError(f"{f}: data: needs train and test files, or file + split")
            self.files = {s: _str(d, s, f"{f}: data") for s in ("train", "test")}
            self.split_rule = None

        p = _check_keys(spec["prompt"], _PROMPT_KEYS, f"{f}: prompt")
        self.system = _str(p, "system", f"{f}: prompt")
        if "template" in p:
            if "question" in p or "context" in p:
                raise TaskSpecError(f"{f}: prompt: give a template or question/context fields, not both")
            self.prompt = Template(_str(p, "template", f"{f}: prompt"), p.get("format"), f"{f}: prompt")
            self.question_field = None
        else:
            self.question_field = _str(p, "question", f"{f}: prompt", required=True)
            ctx = _str(p, "context", f"{f}: prompt")
            text = DEFAULT_READING_PROMPT if ctx else DEFAULT_PROMPT
            self.prompt = _FieldsTemplate(text, {"question": self.question_field, **({"context": ctx} if ctx else {})})

        g = spec["gold"]
        if isinstance(g, str):
            g = {"field": g}
        g = _check_keys(g, _GOLD_KEYS, f"{f}: gold")
        if ("field" in g) == ("template" in g):
            raise TaskSpecError(f"{f}: gold: give exactly one of field or template")
        self.gold_field = _str(g, "field", f"{f}: gold")
        self.gold_template = (Template(_str(g, "template", f"{f}: gold"), g.get("format"), f"{f}: gold")
                              if "template" in g else None)
        if self.gold_template is not None and ("map" in g or "join" in g):
            raise TaskSpecError(f"{f}: gold: map and join go with gold.field; in a template write the words there")
        if self.gold_template is None and "format" in g:
            raise TaskSpecError(f"{f}: gold.format: goes with gold.template, not gold.field")
        self.gold_map = _value_map(g, f"{f}: gold")
        self.gold_join = g.get("join")
        if self.gold_join is not None and not isinstance(self.gold_join, str):
            raise TaskSpecError(f"{f}: gold.join: must be a string such as \", \", got {self.gold_join!r}")

        self._parse_judge(spec["judge"], f)
        para = _check_keys(spec.get("paraphrase") or {}, _PARA_KEYS, f"{f}: paraphrase")
        self.paraphrase_template = (Template(_str(para, "template", f"{f}: paraphrase"), para.get("format"),
                                             f"{f}: paraphrase") if "template" in para else None)
        v = _check_keys(para.get("validity") or {}, _VALIDITY_KEYS, f"{f}: paraphrase.validity")
        self.validity = {}
        for key in ("max_words", "max_chars"):
            if _int(v, key, f"{f}: paraphrase.validity") is not None:
                self.validity[key] = v[key]
        for key in ("must_match", "must_not_match"):
            if key in v:
                self.validity[key] = _regex(_str(v, key, f"{f}: paraphrase.validity"),
                                            f"{f}: paraphrase.validity.{key}")
        if "banned_phrases" in v:
            bp = v["banned_phrases"]
            if not isinstance(bp, list) or not all(isinstance(x, str) and x for x in bp):
                raise TaskSpecError(f"{f}: paraphrase.validity.banned_phrases: must be a list of strings")
            self.validity["banned_phrases"] = [x.lower() for x in bp]
        # the rule's identity, for caches keyed on a task's validity rules (`Task.validity_version`)
        rule_hash = hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:8]
        self.validity_version = f"spec-validity-v1+{rule_hash}"

    def _parse_judge(self, j: Any, f: str) -> None:
        where = f"{f}: judge"
        if not isinstance(j, dict) or "kind" not in j:
            raise TaskSpecError(f"{where}: must be a mapping with a kind (one of {sorted(JUDGE_KEYS)})")
        kind = j["kind"]
        if not isinstance(kind, str) or kind not in JUDGE_KEYS:
            raise TaskSpecError(f"{where}.kind: {kind!r} is not one of {sorted(JUDGE_KEYS)}")
        required, optional = JUDGE_KEYS[kind]
        _check_keys(j, required | optional | {"kind"}, where, required)
        self.judge_kind = kind
        self.judge_cfg = dict(j)
        for key in ("answer", "answers", "choices", "tests", "setup", "question", "pattern_field"):
            if key in j:
                _str(j, key, where)
        self.judge_map = _value_map(j, where)
        if self.judge_map is not None:
            self.judge_cfg["map"] = self.judge_map       # string keys: hashable in the judge version below
        if "multi_span" in j and not isinstance(j["multi_span"], bool):
            raise TaskSpecError(f"{where}.multi_span: must be true or false, got {j['multi_span']!r}")
        self.multi_span = bool(j.get("multi_span", False))
        if kind == "f1":
            t = j.get("threshold", 0.5)
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t <= 1:
                raise TaskSpecError(f"{where}.threshold: must be a number in (0, 1], got {t!r}")
            self.judge_cfg["threshold"] = float(t)
        if kind == "regex":
            if ("pattern_field" in j) == ("pattern" in j) or ("pattern" in j) != ("answers" in j):
                raise TaskSpecError(f"{where}: regex needs pattern + answers (extract and compare) or pattern_field "
                                    "(the item's own regex must match)")
            if "pattern_field" in j and ("map" in j or "multi_span" in j):
                raise TaskSpecError(f"{where}: map and multi_span go with answers, not with pattern_field")
            if "pattern" in j:
                self._pattern = _regex(_str(j, "pattern", where), f"{where}.pattern")
        if kind == "code":
            t = j.get("timeout", 10)
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t <= 120:
                raise TaskSpecError(f"{where}.timeout: must be seconds in (0, 120], got {t!r}")
        if kind == "llm":
            self.judge_model = j.get("model", "base")
            if not isinstance(self.judge_model, str) or not self.judge_model:
                raise TaskSpecError(f"{where}.model: must be 'base' or a model name")
        base_version = _base_judge_version(kind)
        cfg_hash = hashlib.sha256(json.dumps(self.judge_cfg, sort_keys=True).encode()).hexdigest()[:8]
        self.judge_version = f"{base_version}+{cfg_hash}"

    # --- data --------------------------------------------------------------------------------------------------
    def _file(self, key: str, data_dir: Path | None) -> tuple[Path, Path | None]:
        text = self.files[key]
        where = f"{self.path}: data.{'file' if key == 'all' else key}"
        if "{data_dir}" in text:
            if data_dir is None:
                raise TaskSpecError(f"{where}: {text!r} uses {{data_dir}} but no data directory is set "
                                    "(pass --data-dir or set S3FT_DATA_DIR)")
            rel = text.replace("{data_dir}", "").lstrip("/")
            return (data_dir / rel), data_dir
        p = Path(text).expanduser()
        p = p if p.is_absolute() else self.path.parent / p
        return p.resolve(), None

    def _load_file(self, key: str, data_dir: Path | None) -> LoadedRows:
        if (key, data_dir) in self._rows:
            return self._rows[(key, data_dir)]
        path, root = self._file(key, data_dir)
        where = f"{self.path}: data.{'file' if key == 'all' else key}"
        if path.is_dir():
            raise TaskSpecError(f"{where}: {path} is a folder; name a data file (.jsonl, .jsonl.gz, .csv or .tsv)")
        name = path.name.lower()
        if not name.endswith((".jsonl", ".jsonl.gz", ".json", ".csv", ".tsv")):
            raise TaskSpecError(f"{where}: {path.name}: data files must be .jsonl, .jsonl.gz, .csv or .tsv")
        if not path.is_file():
            raise TaskSpecError(f"{where}: data file {path} not found")
        if root is not None:
            digest = verify_file(root, str(path.relative_to(root)))
        else:
            digest = file_sha256(path)
        try:
            rows = _jsonl_lines(path, where) if name.endswith((".jsonl", ".jsonl.gz", ".json")) else \
                _csv_rows(path, where, "\t" if name.endswith(".tsv") else ",")
        except UnicodeDecodeError as e:
            raise TaskSpecError(f"{where}: {path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        except (OSError, EOFError) as e:           # e.g. a .gz file that is not gzip, or is cut short
            raise TaskSpecError(f"{where}: {path}: cannot be read ({e})") from None
        loaded = LoadedRows([r for _, r in rows], f"local:{path}", digest)
        loaded.lines = [ln for ln, _ in rows]           # type: ignore[attr-defined]
        loaded.path = path                               # type: ignore[attr-defined]
        self._rows[(key, data_dir)] = loaded
        return loaded

    def load_split(self, split: str, data_dir: Path | None) -> Split:
        if split not in self.splits:
            raise ValueError(f"task {self.name} has splits {self.splits}, not {split!r}")
        key = "all" if self.split_rule else split
        loaded = self._load_file(key, data_dir)
        examples, seen = [], {}
        for index, (row, line) in enumerate(zip(loaded.rows, loaded.lines)):
            where = f"{self.path}: {loaded.path}:{line}"
            if not isinstance(row, dict):
                raise TaskSpecError(f"{where}: row is not an object")
            if self.id_field:
                raw_id = get_path(row, self.id_field)
                if raw_id is _MISSING or not isinstance(raw_id, (str, int)) or str(raw_id) == "":
                    raise TaskSpecError(f"{self.path}: data.id: {loaded.path}:{line}: field {self.id_field!r} is "
                                        "missing or not a string/integer")
                ex_id = f"{self.name}/{raw_id}"
            else:
                ex_id = f"{self.name}/{index}" if self.split_rule else f"{self.name}/{split}/{index}"
            if ex_id in seen:
                raise TaskSpecError(f"{self.path}: data.id: {loaded.path}:{line}: duplicate id {ex_id!r} (first at "
                                    f"line {seen[ex_id]})")
            seen[ex_id] = line
            ex = {"id": ex_id, "fields": _decode_csv_lists(row) if loaded.path.suffix in (".csv", ".tsv") else row}
            self.check_example(ex, f"{loaded.path}:{line}")
            examples.append(ex)
        data_key = "file" if self.split_rule else split
        if not examples:
            raise TaskSpecError(f"{self.path}: data.{data_key}: {loaded.path} has no rows (empty, blank lines only, or "
                                "a CSV header without rows); a task needs training and test items")
        if self.split_rule:
            rule = self.split_rule
            group = rule["group_by"]
            if group:
                for ex, line in zip(examples, loaded.lines):
                    if get_path(ex["fields"], group) is _MISSING:
                        raise TaskSpecError(f"{self.path}: data.split.group_by: {loaded.path}:{line}: field "
                                            f"{group!r} is missing")
            key_of = (lambda ex: str(get_path(ex["fields"], group))) if group else (lambda ex: ex["id"])
            train, test = group_split(examples, key_of, rule["test_fraction"], rule["seed"])
            examples = train if split == "train" else test
            if not examples:
                raise TaskSpecError(
                    f"{self.path}: data.split: the {split} side of {loaded.path} is empty ({len(train) + len(test)} "
                    f"row(s), {len(train)} train / {len(test)} test at test_fraction {rule['test_fraction']:g}, seed "
                    f"{rule['seed']}); add rows, or change data.split.test_fraction or seed")
        return Split(examples, {split if not self.split_rule else "all": loaded})

    def check_example(self, ex: dict, row_where: str) -> None:
        """Render every prompt and resolve every judge field of one example; errors name key and row."""
        checks = [("prompt", lambda: self.predict_messages(ex)), ("gold", lambda: self.gold_response(ex)),
                  ("judge", lambda: self._judge_inputs(ex))]
        if self.paraphrase_template is not None:
            checks.append(("paraphrase.template", lambda: self.paraphrase_messages(ex)))
        for key, fn in checks:
            try:
                fn()
            except TaskSpecError as e:
                raise TaskSpecError(f"{self.path}: {row_where}: {e}") from None
            except Exception as e:  # template errors come in many types; all are a bad row for this key
                raise TaskSpecError(f"{self.path}: {row_where}: {key}: {type(e).__name__}: {e}") from None

    def inline_example(self, row: dict, where: str) -> dict:
        ex = {"fields": row}
        self.check_example(ex, where)
        return ex

    # --- prompts -----------------------------------------------------------------------------------------------
    def _render(self, tpl: Template, ex: dict, **extra: str) -> str:
        return tpl.render({**ex["fields"], **extra}).strip()

    def predict_messages(self, ex: dict) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": self._render(self.prompt, ex)}]

    def paraphrase_messages(self, ex: dict) -> list[dict]:
        prompt = self.predict_messages(ex)[-1]["content"]
        gold = self.gold_response(ex)
        if self.paraphrase_template is None:
            return [{"role": "user", "content": PARAPHRASE.format(instruction=prompt, gold=gold)}]
        return [{"role": "user", "content": self._render(self.paraphrase_template, ex, prompt=prompt, gold=gold)}]

    def gold_response(self, ex: dict) -> str:
        if self.gold_template is not None:
            text = self._render(self.gold_template, ex)
        else:
            v = _mapped(_field(ex, self.gold_field, "gold.field"), self.gold_map, self.gold_field, "gold")
            if isinstance(v, list) and v and all(isinstance(x, list) for x in v):
                v = v[0]                                   # several annotations: the first one
                join = self.gold_join if self.gold_join is not None else ", "
            else:
                join = self.gold_join
            if isinstance(v, list):
                bad = [x for x in v if not _is_scalar(x)]
                if bad:
                    raise TaskSpecError(f"gold.field: {self.gold_field!r} must be a string, a number or a list of "
                                        f"them, but holds {_kind(bad[0])}")
                v = join.join(str(x).strip() for x in v if str(x).strip()) if join is not None else \
                    (v[0] if v else "")
            if isinstance(v, bool):
                raise TaskSpecError(f"gold.field: {self.gold_field!r} is a boolean ({str(v).lower()}); map it to "
                                    "words with gold.map, e.g. map: {true: 'yes', false: 'no'}")
            if not _is_scalar(v):
                raise TaskSpecError(f"gold.field: {self.gold_field!r} must be a string or number, got {_kind(v)}")
            text = str(v).strip()
            if not text:
                raise TaskSpecError(f"gold.field: field {self.gold_field!r} is empty")
        if not text:
            raise TaskSpecError("gold.template: the gold response is empty")
        return text

    def question_text(self, ex: dict) -> str:
        field = self.judge_cfg.get("question") or self.question_field
        if field:
            return str(_field(ex, field, "judge.question"))
        return self.predict_messages(ex)[-1]["content"]

    def paraphrase_rejection(self, ex: dict, text: str) -> str | None:
        """The spec's validity rule for paraphrases (on top of the suite's banned-phrase filter)."""
        v = self.validity
        if "max_words" in v and len(text.split()) > v["max_words"]:
            return f"longer than {v['max_words']} words"
        if "max_chars" in v and len(text) > v["max_chars"]:
            return f"longer than {v['max_chars']} characters"
        if "must_match" in v and not v["must_match"].search(text):
            return "does not match validity.must_match"
        if "must_not_match" in v and v["must_not_match"].search(text):
            return "matches validity.must_not_match"
        low = text.lower()
        for phrase in v.get("banned_phrases", ()):
            if phrase in low:
                return f"mentions {phrase!r}"
        return None

    def paraphrase_invalid(self, ex: dict, text: str, verdict: Verdict | None = None) -> str | None:
        """The same rule under the name of the per-task validity hook (`Task.paraphrase_invalid`)."""
        return self.paraphrase_rejection(ex, text)

    # --- judging -----------------------------------------------------------------------------------------------
    def _judge_inputs(self, ex: dict) -> tuple:
        """What the judge compares a response with, resolved and type-checked for one example."""
        j, kind = self.judge_cfg, self.judge_kind
        if kind == "numeric":
            v = _mapped(_field(ex, j["answer"], "judge.answer"), self.judge_map, j["answer"], "judge")
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise TaskSpecError(f"judge.answer: {j['answer']!r} must be a number or a string, got "
                                    f"{type(v).__name__}")
            text = str(v)
            if "####" in text:
                text = gold_answer(text)
            if normalize_number(text) is None:
                raise TaskSpecError(f"judge.answer: {j['answer']!r} = {str(v)[:60]!r} is not a number")
            return (text,)
        if kind in ("exact", "contains", "f1", "llm") or (kind == "regex" and "answers" in j):
            return (_annotations(ex, j["answers"], self.judge_map, self.multi_span),)
        if kind == "regex":
            pat = _field(ex, j["pattern_field"], "judge.pattern_field")
            if not isinstance(pat, str):
                raise TaskSpecError(f"judge.pattern_field: {j['pattern_field']!r} must be a string")
            _regex(pat, "judge.pattern_field")
            return (pat,)
        if kind == "choice":
            return _choices(ex, j["choices"], j["answer"], self.judge_map)
        if kind == "code":
            tests = _field(ex, j["tests"], "judge.tests")
            if isinstance(tests, str):
                tests = [t for t in tests.splitlines() if t.strip()]
            if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
                raise TaskSpecError(f"judge.tests: {j['tests']!r} must be a non-empty list of assert strings")
            setup = _field(ex, j["setup"], "judge.setup") if "setup" in j else ""
            if not isinstance(setup, str):
                raise TaskSpecError(f"judge.setup: {j['setup']!r} must be a string")
            return (tests, setup)
        raise AssertionError(kind)

    def judge(self, ex: dict, response: str) -> Verdict:
        return self.judge_many([ex], [response])[0]

    def judge_many(self, examples: Sequence[dict], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        if len(examples) != len(responses):
            raise ValueError(f"{len(examples)} examples but {len(responses)} responses")
        kind, j = self.judge_kind, self.judge_cfg
        inputs = [self._judge_inputs(ex) for ex in examples]
        if kind == "code":
            return judge_code_many([(r, t, s) for r, (t, s) in zip(responses, inputs)],
                                   timeout=float(j.get("timeout", 10)), progress=progress)
        if kind == "llm":
            if self._llm is None:
                raise RuntimeError(f"task {self.name} uses the LLM judge but no judge model is attached "
                                   "(the grid attaches the base model; `repro judge` takes --judge-model)")
            return self._llm.judge_many([self.question_text(ex) for ex in examples], list(responses),
                                        [" / ".join(", ".join(spans) for spans in a[:5]) for (a,) in inputs],
                                        progress=progress)

        out = []
        for r, args in zip(responses, inputs):
            if kind == "numeric":
                out.append(numeric.judge_numeric(r, args[0]))
            elif kind in ("exact", "contains", "f1"):
                out.append(text.judge_spans(r, args[0], kind, j.get("threshold", 0.5)))
            elif kind == "regex" and "answers" in j:
                out.append(pattern.judge_regex_extract(r, self._pattern, [", ".join(a) for a in args[0]]))
            elif kind == "regex":
                out.append(pattern.judge_regex_match(r, args[0]))
            else:   # choice
                labels, texts, gold = args
                out.append(pattern.judge_choice(r, labels, gold, texts))
        return out

    def use_llm_judge(self, judge: Any) -> None:
        """Attach the LLM judge. The grid passes the base model's; a spec naming another model gets that one,
        generating through the same cache."""
        if self.judge_model != "base":
            judge = LLMJudge(make_generator(self.judge_model, cache=getattr(judge.generator, "cache", None)))
        self._llm = judge

    def describe(self) -> dict:
        return {"task": self.name, "template_version": self.template_version, "judge_version": self.judge_version,
                "judge": self.judge_kind, "spec": str(self.path), "spec_sha256": self.spec_sha256}


class _FieldsTemplate(Template):
    """The default prompt over named fields (prompt: {question: ..., context: ...}); dotted paths allowed."""

    def __init__(self, text: str, fields: dict[str, str]) -> None:
        self.text, self.format, self.fields = text, "python", fields

    def render(self, row: dict) -> str:
        values = {}
        for name, path in self.fields.items():
            v = get_path(row, path)
            if v is _MISSING or isinstance(v, (dict, list)) or v is None:
                raise TaskSpecError(f"prompt.{name}: field {path!r} is missing or not a string")
            values[name] = str(v)
        return self.text.format(**values)


# --- helpers -----------------------------------------------------------------------------------------------------

def _base_judge_version(kind: str) -> str:
    return {"numeric": numeric.JUDGE_VERSION, "contains": text.JUDGE_VERSION, "exact": text.EXACT_VERSION,
            "f1": text.F1_VERSION, "regex": pattern.REGEX_VERSION, "choice": pattern.CHOICE_VERSION,
            "code": code.JUDGE_VERSION}.get(kind, llm.JUDGE_VERSION)


def _regex(text: str, where: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as e:
        raise TaskSpecError(f"{where}: invalid regular expression {text!r}: {e}") from None


def _field(ex: dict, path: str, key: str) -> Any:
    v = get_path(ex["fields"], path)
    if v is _MISSING:
        raise TaskSpecError(f"{key}: field {path!r} is missing")
    return v


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    return {bool: "a boolean", dict: "an object", list: "a list", type(None): "null"}.get(type(v), type(v).__name__)


def _map_key(v: Any) -> str:
    """How a value is looked up in a `map:`: YAML's true, JSON's true and a CSV cell "True" are one key."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip().lower()


def _value_map(d: dict, where: str) -> dict[str, str] | None:
    """The `map:` of a gold or judge mapping (data values -> words), keyed by `_map_key`; None when absent."""
    if "map" not in d:
        return None
    m = d["map"]
    if not isinstance(m, dict) or not m:
        raise TaskSpecError(f"{where}.map: must be a non-empty mapping of data values to words, e.g. "
                            "{true: 'yes', false: 'no'}")
    out: dict[str, str] = {}
    for k, word in m.items():
        if isinstance(k, (list, dict, tuple)):
            raise TaskSpecError(f"{where}.map: key {k!r} must be a single value")
        if not _is_scalar(word) or not str(word).strip():
            raise TaskSpecError(f"{where}.map: {k!r} must map to a non-empty word or number, got {word!r}")
        if _map_key(k) in out:
            raise TaskSpecError(f"{where}.map: keys {k!r} and another one are the same value; keep one")
        out[_map_key(k)] = str(word).strip()
    return out


def _mapped(v: Any, m: dict[str, str] | None, path: str, key: str) -> Any:
    """A field's value with `key.map` applied (to each item of a list); a value the map lacks is an error."""
    if m is None:
        return v
    if isinstance(v, list):
        return [_mapped(x, m, path, key) for x in v]
    if isinstance(v, dict) or _map_key(v) not in m:
        raise TaskSpecError(f"{key}.map: field {path!r} holds {v!r}, which the map does not list (keys: "
                            f"{', '.join(m)}); add it to {key}.map")
    return m[_map_key(v)]


def _annotations(ex: dict, path: str, value_map: dict[str, str] | None, multi_span: bool) -> list[list[str]]:
    """The gold annotations of an `answers` field, each a list of spans: a string or number is one annotation of one
    span; a list of them is several aliases (one span each) or, with multi_span, one annotation of several spans; a
    list of lists is several annotations of their spans (DROP's answers)."""
    v = _mapped(_field(ex, path, "judge.answers"), value_map, path, "judge")
    need = ("must be a string, a list of strings (aliases) or a list of lists of strings (annotations of several "
            "spans)")
    if isinstance(v, bool):
        raise TaskSpecError(f"judge.answers: field {path!r} is a boolean ({str(v).lower()}); map it to words with "
                            "judge.map, e.g. map: {true: 'yes', false: 'no'}")
    if _is_scalar(v):
        v = [v]
    if not isinstance(v, list):
        raise TaskSpecError(f"judge.answers: field {path!r} {need}, got {_kind(v)}")
    if multi_span and all(_is_scalar(x) for x in v):
        v = [v]
    out = []
    for item in v:
        spans = item if isinstance(item, list) else [item]
        bad = [x for x in spans if not _is_scalar(x)]
        if bad:
            hint = "; map booleans with judge.map" if isinstance(bad[0], bool) else ""
            raise TaskSpecError(f"judge.answers: field {path!r} {need}, but holds {_kind(bad[0])}{hint}")
        spans = [str(x).strip() for x in spans if str(x).strip()]
        if spans:
            out.append(spans)
    if not out:
        raise TaskSpecError(f"judge.answers: field {path!r} holds no non-empty answer")
    return out


def _choices(ex: dict, choices_path: str, answer_path: str,
             value_map: dict[str, str] | None = None) -> tuple[list[str], list[str], str]:
    choices = _field(ex, choices_path, "judge.choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise TaskSpecError(f"judge.choices: field {choices_path!r} must be a list of at least 2 choices")
    if all(isinstance(c, str) for c in choices):
        texts, labels = list(choices), [chr(ord("A") + i) for i in range(len(choices))]
    elif all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in choices):
        texts = [c["text"] for c in choices]
        labels = [str(c["label"]) if "label" in c else chr(ord("A") + i) for i, c in enumerate(choices)]
    else:
        raise TaskSpecError(f"judge.choices: field {choices_path!r} must hold strings or {{text, label}} objects")
    if len(set(labels)) != len(labels):
        raise TaskSpecError(f"judge.choices: field {choices_path!r} has repeated labels {labels}")
    ans = _mapped(_field(ex, answer_path, "judge.answer"), value_map, answer_path, "judge")
    if isinstance(ans, int) and not isinstance(ans, bool):
        if not 0 <= ans < len(labels):
            raise TaskSpecError(f"judge.answer: index {ans} is out of range for {len(labels)} choices")
        gold = labels[ans]
    elif isinstance(ans, str) and ans.strip() in labels:
        gold = ans.strip()
    elif isinstance(ans, str) and ans.strip().isdigit() and 0 <= int(ans) < len(labels) and not labels[0].isdigit():
        gold = labels[int(ans)]
    else:
        raise TaskSpecError(f"judge.answer: {ans!r} is neither a label of {labels} nor a 0-based index")
    return labels, texts, gold


def _jsonl_lines(path: Path, where: str) -> list[tuple[int, Any]]:
    """(line number, parsed row) of every non-blank line; a bad line fails with its number."""

    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append((lineno, parse_json_line(line, f"{path}:{lineno}")))
                except DataError as e:
                    hint = ("; a .json data file is read as JSON Lines (one object per line)"
                            if path.suffix == ".json" else "")
                    raise TaskSpecError(f"{where}: {e}{hint}") from None
    return out


def _csv_rows(path: Path, where: str, delimiter: str) -> list[tuple[int, dict]]:
    """(line number, row) of every data row of a CSV/TSV with a header; a row with more or fewer cells than the
    header is an error (csv would fill the missing cells with None, which templates print as "None")."""
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as fh:      # -sig: a spreadsheet's byte-order mark
        reader = csv.reader(fh, delimiter=delimiter)
        header: list[str] | None = None
        try:
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                if header is None:
                    header = [c.strip() for c in cells]
                    dup = sorted({c for c in header if header.count(c) > 1})
                    if dup:
                        raise TaskSpecError(f"{where}: {path}:{line}: header names column(s) {dup} twice")
                    if any(not c for c in header):
                        raise TaskSpecError(f"{where}: {path}:{line}: header has an empty column name (column "
                                            f"{header.index('') + 1})")
                    continue
                if len(cells) != len(header):
                    fix = (f"missing {header[len(cells):]}" if len(cells) < len(header)
                           else f"{len(cells) - len(header)} extra; quote cells that hold '{delimiter}'")
                    raise TaskSpecError(f"{where}: {path}:{line}: row has {len(cells)} cells, the header "
                                        f"{len(header)} ({fix})")
                rows.append((line, dict(zip(header, cells))))
        except csv.Error as e:
            raise TaskSpecError(f"{where}: {path}:{reader.line_num}: not valid CSV ({e})") from None
    return rows


def _decode_csv_lists(row: dict) -> dict:
    """CSV cells holding JSON lists/objects ("[...]", "{...}") become lists/objects; other cells stay strings."""
    out = {}
    for k, v in row.items():
        if isinstance(v, str) and v.strip()[:1] in ("[", "{"):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        out[k] = v
    return out


def find_task_files(folder: str | Path) -> list[Path]:
    """Task spec files directly in `folder` (and one level below), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise TaskSpecError(f"{root}: tasks folder not found")
    return sorted(p for pat in ("*.yaml", "*.yml", "*/*.yaml", "*/*.yml") for p in root.glob(pat))

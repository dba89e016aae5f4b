"""The loader layer (evals.data) and the task splits built on it, against the real benchmark files and against small
broken data directories written into tmp_path (with a SHA256SUMS computed here)."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from evals.data import (
    DATA_DIR_ENV,
    DataError,
    Field,
    Source,
    group_split,
    load_source,
    read_jsonl,
    resolve_data_dir,
    seeded_subset,
    verify_file,
)
from evals.tasks import get_task, list_tasks, task_class

# --- helpers --------------------------------------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_data_dir(root: Path, files: dict[str, str | bytes], *, sums: bool = True) -> Path:
    """A data directory holding `files` (relative path -> content) and, when `sums`, a SHA256SUMS in the same
    "<digest>  ./<path>" format as the shared one."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)
        lines.append(f"{_sha(data)}  ./{rel}\n")
    if sums:
        (root / "SHA256SUMS").write_text("".join(lines))
    return root


def jl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD_GSM = {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=<<2+3=5>>5\n#### 5"}


@pytest.fixture(scope="module")
def splits(data_dir):
    """Every split of every task, loaded once."""
    out = {}
    for name in ("gsm8k", "mbpp", "squad", "nq_open"):
        task = get_task(name)
        out[name] = {s: task.load_split(s, data_dir).examples for s in task.splits}
    return out


# --- real split sizes -----------------------------------------------------------------------------------------

def test_gsm8k_split_sizes(splits):
    assert len(splits["gsm8k"]["train"]) == 7473
    assert len(splits["gsm8k"]["test"]) == 1319


def test_mbpp_splits_follow_the_standard_task_id_ranges(splits):
    ids = {s: sorted(ex["task_id"] for ex in rows) for s, rows in splits["mbpp"].items()}
    assert ids["train"] == list(range(601, 975))
    assert len(ids["train"]) == 374
    assert ids["test"] == list(range(11, 511))
    assert len(ids["test"]) == 500
    assert ids["prompt"] == list(range(1, 11))
    assert ids["validation"] == list(range(511, 601))
    for s, rows in splits["mbpp"].items():
        assert all(ex["id"] == f"mbpp/{ex['task_id']}" for ex in rows), s


def test_squad_split_is_by_title_and_disjoint(splits):
    train, test = splits["squad"]["train"], splits["squad"]["test"]
    assert len(train) + len(test) == 1000
    # "about half the titles to test": both sides substantial
    assert 300 <= len(test) <= 700
    train_titles, test_titles = {e["title"] for e in train}, {e["title"] for e in test}
    assert train_titles and test_titles
    assert not train_titles & test_titles, "a passage title straddles train and test"
    assert not {e["id"] for e in train} & {e["id"] for e in test}
    assert not {e["context"] for e in train} & {e["context"] for e in test}
    # pinned: the split is seeded, so a change here silently changes every SQuAD result
    assert (len(train), len(test)) == (464, 536)


def test_nq_open_splits(splits):
    train, test = splits["nq_open"]["train"], splits["nq_open"]["test"]
    assert len(test) == 3610
    assert len(train) == 1800 + 1769
    assert not {e["id"] for e in train} & {e["id"] for e in test}
    norm = lambda q: " ".join(q.lower().split())  # noqa: E731
    assert not {norm(e["question"]) for e in train} & {norm(e["question"]) for e in test}
    for e in test[:50]:
        assert e["id"] == "nq_open/" + hashlib.sha256(e["question"].encode()).hexdigest()[:12]
        assert isinstance(e["answers"], list) and e["answers"]


@pytest.mark.parametrize("name", ["gsm8k", "mbpp", "squad", "nq_open"])
def test_ids_unique_within_and_across_splits(splits, name):
    seen = []
    for rows in splits[name].values():
        ids = [e["id"] for e in rows]
        assert len(ids) == len(set(ids))
        seen += ids
    assert len(seen) == len(set(seen))
    assert all(i.startswith(f"{name}/") for i in seen)


@pytest.mark.parametrize("name", ["gsm8k", "mbpp", "squad", "nq_open"])
def test_ids_stable_across_two_loads(splits, data_dir, name):
    task = get_task(name)  # a fresh instance, a fresh read of the files
    for split, rows in splits[name].items():
        again = task.load_split(split, data_dir).examples
        assert [e["id"] for e in again] == [e["id"] for e in rows]
        assert again == rows


def test_pinned_ids_point_at_the_same_rows(splits):
    by_id = {e["id"]: e for name in splits for rows in splits[name].values() for e in rows}
    assert by_id["gsm8k/test/0"]["question"].startswith("Janet")
    assert by_id["gsm8k/train/0"]["question"].startswith("Natalia sold clips")
    assert by_id["mbpp/11"]["text"].startswith("Write a python function to remove first and last occurrence")
    assert by_id["squad/5727dd2e4b864d1900163eba"]["title"] == "Harvard_University"
    assert by_id["nq_open/f5b0a6b8d9d9"]["question"] == "when was the last time anyone was on the moon"


def test_load_source_records_local_origin_and_checksum(data_dir):
    loaded = load_source(Source("gsm8k/test.jsonl", None, (Field("question", str),)), data_dir)
    assert loaded.origin == "local:gsm8k/test.jsonl"
    listed = {line.split()[1].lstrip("*"): line.split()[0]
              for line in (data_dir / "SHA256SUMS").read_text().splitlines() if line.strip()}
    assert loaded.sha256 == listed["./gsm8k/test.jsonl"]
    assert loaded.sha256 == _sha((data_dir / "gsm8k/test.jsonl").read_bytes())
    assert len(loaded.rows) == 1319


def test_split_provenance(data_dir):
    split = get_task("nq_open").load_split("train", data_dir)
    prov = split.provenance()
    assert sorted(prov) == ["NQ-open.efficientqa.dev.1.1.jsonl", "NQ-open.efficientqa.test.1.1.jsonl"]
    assert sum(p["rows"] for p in prov.values()) == len(split.examples) == 3569
    assert all(p["origin"].startswith("local:nq_open/") and len(p["sha256"]) == 64 for p in prov.values())


# --- subsets and group splits ---------------------------------------------------------------------------------

def test_seeded_subset_reproducible_ordered_and_seed_dependent():
    items = list(range(1000))
    a, b = seeded_subset(items, 50, seed=3), seeded_subset(items, 50, seed=3)
    assert a == b and len(a) == 50
    assert a == sorted(a), "subset must keep the original order"
    assert set(a) <= set(items)
    assert seeded_subset(items, 50, seed=4) != a
    assert seeded_subset(items, None, seed=3) == items
    assert seeded_subset(items, 1000, seed=3) == items
    assert seeded_subset(items, 5000, seed=3) == items
    assert seeded_subset(items, 0, seed=3) == []


def test_task_load_limit_is_a_seeded_subset(data_dir):
    task = get_task("gsm8k")
    full = task.load("test", data_dir)
    a = task.load("test", data_dir, limit=25, seed=7)
    assert a == get_task("gsm8k").load("test", data_dir, limit=25, seed=7)
    assert len(a) == 25
    positions = [full.index(e) for e in a]
    assert positions == sorted(positions)
    assert [e["id"] for e in task.load("test", data_dir, limit=25, seed=8)] != [e["id"] for e in a]
    with pytest.raises(ValueError, match="validation"):
        task.load("validation", data_dir)


def test_group_split_keeps_groups_together_and_ignores_other_rows():
    rows = [{"g": f"group{i % 40}", "i": i} for i in range(400)]
    train, test = group_split(rows, lambda r: r["g"], 0.5, seed=1)
    assert len(train) + len(test) == 400 and train and test
    assert not {r["g"] for r in train} & {r["g"] for r in test}
    # a group's side does not depend on which other rows are present
    subset = [r for r in rows if r["i"] % 3 == 0]
    _, test2 = group_split(subset, lambda r: r["g"], 0.5, seed=1)
    assert {r["g"] for r in test2} == {r["g"] for r in test} & {r["g"] for r in subset}
    # and does depend on the seed
    _, test3 = group_split(rows, lambda r: r["g"], 0.5, seed=2)
    assert {r["g"] for r in test3} != {r["g"] for r in test}


# --- resolve_data_dir -----------------------------------------------------------------------------------------

def test_resolve_data_dir_missing_directory_raises(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as e:
        resolve_data_dir(missing)
    assert str(missing) in str(e.value)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DataError):
        resolve_data_dir(a_file)


def test_resolve_data_dir_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_dir(None) == tmp_path.resolve()
    assert resolve_data_dir("") == tmp_path.resolve()
    other = tmp_path / "explicit"
    other.mkdir()
    assert resolve_data_dir(other) == other.resolve(), "an explicit directory wins over the environment"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "gone"))
    with pytest.raises(DataError, match=DATA_DIR_ENV):
        resolve_data_dir(None)
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_dir(None) is None


def test_env_var_data_dir_is_used_for_loading(tmp_path, monkeypatch):
    """With no explicit directory, rows come from $S3FT_DATA_DIR."""
    d = make_data_dir(tmp_path / "d", {"gsm8k/test.jsonl": jl(GOOD_GSM, GOOD_GSM)})
    monkeypatch.setenv(DATA_DIR_ENV, str(d))
    examples = get_task("gsm8k").load("test", resolve_data_dir(None))
    assert [e["id"] for e in examples] == ["gsm8k/test/0", "gsm8k/test/1"]


def test_no_data_dir_and_no_hub_equivalent_is_a_clear_error():
    with pytest.raises(DataError, match=DATA_DIR_ENV):
        load_source(Source("nq_open/NQ-open.efficientqa.dev.1.1.jsonl", None), None)


# --- broken data directories ----------------------------------------------------------------------------------

def test_invalid_json_line_names_path_and_line(tmp_path):
    d = make_data_dir(tmp_path / "d", {"gsm8k/test.jsonl": jl(GOOD_GSM, "") + '{"question": "q", "answer": \n'})
    with pytest.raises(DataError) as e:
        get_task("gsm8k").load("test", d)
    msg = str(e.value)
    assert f"{d / 'gsm8k/test.jsonl'}:3:" in msg  # line 2 is blank, line 3 is broken
    assert "invalid JSON" in msg


def test_missing_field_names_field_and_line(tmp_path):
    d = make_data_dir(tmp_path / "d", {"gsm8k/train.jsonl": jl(GOOD_GSM, GOOD_GSM, {"question": "q"})})
    with pytest.raises(DataError) as e:
        get_task("gsm8k").load("train", d)
    msg = str(e.value)
    assert f"{d / 'gsm8k/train.jsonl'}:3:" in msg
    assert "'answer'" in msg and "missing" in msg


@pytest.mark.parametrize("bad, field, words", [
    ({"question": "q", "answer": 5}, "'answer'", ["must be str", "got int"]),
    ({"question": ["q"], "answer": "#### 1"}, "'question'", ["must be str", "got list"]),
    ({"question": "", "answer": "#### 1"}, "'question'", ["empty"]),
])
def test_wrong_type_names_field_and_line(tmp_path, bad, field, words):
    d = make_data_dir(tmp_path / "d", {"gsm8k/test.jsonl": jl(GOOD_GSM, bad)})
    with pytest.raises(DataError) as e:
        get_task("gsm8k").load("test", d)
    msg = str(e.value)
    assert f"{d / 'gsm8k/test.jsonl'}:2:" in msg and field in msg
    for w in words:
        assert w in msg


def test_wrong_list_item_type_and_bool_for_int(tmp_path):
    d = make_data_dir(tmp_path / "d", {
        "nq_open/NQ-open.dev.jsonl": jl({"question": "who", "answer": ["a", 3]}),
        "mbpp/mbpp.jsonl": jl({"task_id": True, "text": "t", "code": "", "test_list": ["assert 1"],
                               "test_setup_code": ""}),
    })
    with pytest.raises(DataError, match=r"NQ-open\.dev\.jsonl:1: field 'answer\[1\]' must be str, got int"):
        get_task("nq_open").load("test", d)
    with pytest.raises(DataError, match=r"mbpp\.jsonl:1: field 'task_id' must be int, got bool"):
        get_task("mbpp").load("test", d)


def test_row_that_is_not_an_object(tmp_path):
    d = make_data_dir(tmp_path / "d", {"gsm8k/test.jsonl": jl(GOOD_GSM, [1, 2])})
    with pytest.raises(DataError, match=r"test\.jsonl:2: expected a JSON object, got list"):
        get_task("gsm8k").load("test", d)


def test_squad_query_not_in_olmes_form(tmp_path):
    row = {"id": "x1", "query": "no structure here", "answers_text": ["a"]}
    d = make_data_dir(tmp_path / "d", {"squad/validation_subset1000.jsonl": jl(row)})
    with pytest.raises(DataError, match=r"validation_subset1000\.jsonl:1: field 'query'"):
        get_task("squad").load("test", d)


def test_checksum_mismatch_names_the_file(tmp_path):
    d = make_data_dir(tmp_path / "d", {"gsm8k/test.jsonl": jl(GOOD_GSM)})
    (d / "gsm8k/test.jsonl").write_text(jl(GOOD_GSM, GOOD_GSM))  # modified after SHA256SUMS was written
    with pytest.raises(DataError) as e:
        get_task("gsm8k").load("test", d)
    msg = str(e.value)
    assert str(d / "gsm8k/test.jsonl") in msg
    assert "SHA256SUMS" in msg and "does not match" in msg


def test_checksum_is_rechecked_after_the_file_changes(tmp_path):
    """A file verified once and then modified in the same process must fail verification, not pass on a memo."""
    d = make_data_dir(tmp_path / "d", {"gsm8k/test.jsonl": jl(GOOD_GSM)})
    verify_file(d, "gsm8k/test.jsonl")
    path = d / "gsm8k/test.jsonl"
    path.write_text(jl(GOOD_GSM, GOOD_GSM))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="does not match"):
        verify_file(d, "gsm8k/test.jsonl")


def test_missing_file_names_it(tmp_path):
    d = make_data_dir(tmp_path / "d", {"gsm8k/train.jsonl": jl(GOOD_GSM)})
    with pytest.raises(DataError) as e:
        get_task("gsm8k").load("test", d)
    assert str(d / "gsm8k/test.jsonl") in str(e.value)
    assert "not found" in str(e.value)


def test_unlisted_file_loads_with_a_warning_and_no_sums_file_loads_silently(tmp_path, caplog):
    d = make_data_dir(tmp_path / "d", {"gsm8k/train.jsonl": jl(GOOD_GSM)})
    (d / "gsm8k/test.jsonl").write_text(jl(GOOD_GSM))
    with caplog.at_level(logging.WARNING, logger="evals.data"):
        assert len(get_task("gsm8k").load("test", d)) == 1
    assert any("not listed" in r.getMessage() and "test.jsonl" in r.getMessage() for r in caplog.records)
    d2 = make_data_dir(tmp_path / "d2", {"gsm8k/test.jsonl": jl(GOOD_GSM, GOOD_GSM)}, sums=False)
    assert len(get_task("gsm8k").load("test", d2)) == 2


def test_read_jsonl_gzip_and_blank_lines(tmp_path):
    p = tmp_path / "rows.jsonl.gz"
    p.write_bytes(gzip.compress(jl({"a": 1}, "", {"a": 2}).encode()))
    assert read_jsonl(p, [Field("a", int)]) == [{"a": 1}, {"a": 2}]
    with pytest.raises(DataError, match=r"rows\.jsonl\.gz:1: field 'a' must be str"):
        read_jsonl(p, [Field("a", str)])


# --- registry and task surface ------------------------------------------------------------------------------

def test_registry():
    assert set(list_tasks()) == {"gsm8k", "mbpp", "squad", "nq_open"}
    assert task_class("squad").name == "squad"
    with pytest.raises(DataError, match="gsm8k"):          # an input mistake: one line on the command line
        get_task("no_such_task")
    with pytest.raises(DataError, match="takes no options"):
        get_task("gsm8k", judge="llm")
    with pytest.raises(ValueError, match="judge"):
        get_task("squad", judge="fuzzy")
    assert get_task("squad", judge="llm").describe()["judge"] == "llm"


def test_prompts_and_gold_responses(splits):
    gsm = get_task("gsm8k")
    ex = splits["gsm8k"]["train"][0]
    msgs = gsm.predict_messages(ex)
    assert [m["role"] for m in msgs] == ["user"] and ex["question"] in msgs[0]["content"]
    assert "The answer is N." in msgs[0]["content"]
    gold = gsm.gold_response(ex)
    assert "<<" not in gold and "####" not in gold
    assert gold.endswith("The answer is 72.")
    assert ex["question"] in gsm.paraphrase_messages(ex)[0]["content"]
    # v2 paraphrase prompt: the worked solution without its final-answer line (evals/tasks/gsm8k.py says why)
    steps = gold.rsplit("\n", 1)[0]
    para = gsm.paraphrase_messages(ex)[0]["content"]
    assert steps in para and "The answer is 72." not in para and "72" in steps

    mbpp = get_task("mbpp")
    ex = next(e for e in splits["mbpp"]["test"] if e["id"] == "mbpp/11")
    prompt = mbpp.predict_messages(ex)[0]["content"]
    assert ex["text"] in prompt and all(t in prompt for t in ex["test_list"])
    gold = mbpp.gold_response(ex)
    assert gold.startswith("```python\ndef remove_Occ") and gold.endswith("\n```") and "\r" not in gold

    squad = get_task("squad")
    ex = splits["squad"]["test"][0]
    prompt = squad.predict_messages(ex)[0]["content"]
    assert ex["context"] in prompt and ex["question"] in prompt and "Harvard University" in prompt
    assert squad.gold_response(ex) == "23 years"

    nq = get_task("nq_open")
    ex = splits["nq_open"]["test"][0]
    assert ex["question"] in nq.predict_messages(ex)[0]["content"]
    assert nq.gold_response(ex) == "14 December 1972 UTC"


def test_inline_examples():
    assert get_task("mbpp").inline_example({"test_list": ["assert 1"]}, "f:1")["test_setup_code"] == ""
    with pytest.raises(DataError, match="f:3: field 'answers' must be list"):
        get_task("squad").inline_example({"answers": "Paris"}, "f:3")
    with pytest.raises(DataError, match="f:2: field 'answer' is missing"):
        get_task("gsm8k").inline_example({"id_": 1}, "f:2")

"""repro.driver.carry on plain files: what is carried, what is restored, and that a restore never loses work."""
from __future__ import annotations

import json
from pathlib import Path

from repro.driver.carry import StageCarry, merge_jsonl


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _jsonl(*keys: str) -> str:
    return "".join(json.dumps({"key": k, "text": f"answer {k}"}) + "\n" for k in keys)


def _carry(tmp: Path, touched=(), commits=None) -> StageCarry:
    def commit(paths, message):
        if commits is not None:
            commits.append((message, sorted(p.relative_to(tmp).as_posix() for p in paths)))
        return "abc1234"
    return StageCarry(work=tmp / "runs" / "p", cache_root=tmp / "runs" / "cache", results=tmp / "results" / "p",
                      commit=commit, touched=lambda: touched)


def test_merge_appends_only_missing_keys_and_skips_torn_lines(tmp_path):
    src = _write(tmp_path / "a.jsonl", _jsonl("k1", "k2", "k3") + '{"key": "k4", "te')
    dst = _write(tmp_path / "b.jsonl", _jsonl("k2") + '{"key": "broken')      # torn last line, no newline
    assert merge_jsonl(src, dst) == 2
    keys = []
    for line in dst.read_text().splitlines():
        try:
            keys.append(json.loads(line)["key"])
        except json.JSONDecodeError:
            continue
    assert sorted(keys) == ["k1", "k2", "k3"]
    assert merge_jsonl(src, dst) == 0                                           # idempotent


def test_save_carries_finished_stages_only_and_commits_once(tmp_path):
    work = tmp_path / "runs" / "p"
    _write(work / "t/sft/targets/targets.jsonl", "{}\n")
    _write(work / "t/sft/targets/targets_summary.json", "{}")
    _write(work / "t/s3ft/targets/targets.jsonl", "{}\n")                      # no summary: still building
    _write(work / "t/sft/seed0/train_log.json", "{}")
    _write(work / "t/sft/seed0/adapter/adapter_model.safetensors", "weights")
    _write(work / "t/sft/seed0/checkpoint.pt", "optimizer")                    # only save_partial carries these
    _write(work / "t/sft/seed1/checkpoint.pt", "optimizer")                    # training unfinished
    shard = _write(tmp_path / "runs/cache/generations/m.jsonl", _jsonl("k1"))
    _write(tmp_path / "runs/cache/generations/other.jsonl", _jsonl("k9"))      # not this run's
    commits: list = []
    carry = _carry(tmp_path, touched={shard}, commits=commits)
    assert carry.save("x") == "abc1234"
    assert commits == [("p: carry x (repro run --commit; resumable)", [
        "results/p/_resume/cache/generations/m.jsonl",
        "results/p/_resume/work/t/sft/seed0/adapter/adapter_model.safetensors",
        "results/p/_resume/work/t/sft/seed0/train_log.json",
        "results/p/_resume/work/t/sft/targets/targets.jsonl",
        "results/p/_resume/work/t/sft/targets/targets_summary.json"])]
    assert carry.save("again") is None and len(commits) == 1                    # nothing changed: no commit
    shard.write_text(_jsonl("k1", "k2"))
    carry.save("more answers")
    assert commits[-1][1] == ["results/p/_resume/cache/generations/m.jsonl"]


def test_restore_fills_a_fresh_work_folder_and_never_overwrites_finished_work(tmp_path):
    root = tmp_path / "results/p/_resume"
    _write(root / "work/t/sft/targets/targets.jsonl", "carried targets\n")
    _write(root / "work/t/sft/targets/targets_summary.json", "{}")
    _write(root / "work/t/sft/seed0/train_log.json", '{"carried": true}')
    _write(root / "work/t/sft/seed0/adapter/adapter_model.safetensors", "carried weights")
    _write(root / "cache/benchmarks/b.json", "{}")
    _write(root / "cache/generations/m.jsonl", _jsonl("k1", "k2"))
    work = tmp_path / "runs/p"
    # this machine: an sft targets build a kill interrupted (no summary), seed0 finished here differently
    _write(work / "t/sft/targets/targets.jsonl", "half\n")
    _write(work / "t/sft/seed0/train_log.json", '{"here": true}')
    _write(work / "t/sft/seed0/adapter/adapter_model.safetensors", "local weights")
    _write(tmp_path / "runs/cache/generations/m.jsonl", _jsonl("k2", "k3"))
    carry = _carry(tmp_path)
    assert carry.restore() == 4           # 2 targets files, the benchmark scores, the merged shard
    assert (work / "t/sft/targets/targets.jsonl").read_text() == "carried targets\n"   # the unfinished build replaced
    assert (work / "t/sft/seed0/train_log.json").read_text() == '{"here": true}'       # finished here: kept
    assert (work / "t/sft/seed0/adapter/adapter_model.safetensors").read_text() == "local weights"
    keys = sorted(json.loads(x)["key"] for x in (tmp_path / "runs/cache/generations/m.jsonl").read_text().splitlines())
    assert keys == ["k1", "k2", "k3"]
    assert carry.restore() == 0           # idempotent


def test_restore_takes_cache_files_from_every_preset_but_work_stages_only_from_its_own(tmp_path):
    # a study reuses its pilot's answers and benchmark scores: on a fresh clone they come from the pilot's carry
    pilot = tmp_path / "results/pilot/_resume"
    _write(pilot / "cache/benchmarks/base.json", '{"pilot": true}')
    _write(pilot / "cache/generations/m.jsonl", _jsonl("k1", "k2"))
    _write(pilot / "work/t/sft/seed0/train_log.json", "{}")                     # the pilot's own training
    own = tmp_path / "results/p/_resume"
    _write(own / "cache/benchmarks/base.json", '{"own": true}')                 # same key: this preset's wins
    _write(own / "cache/generations/m.jsonl", _jsonl("k2", "k3"))
    carry = _carry(tmp_path)
    assert carry.restore() == 3                       # the own scores; the shard, merged from each carry
    cache = tmp_path / "runs/cache"
    assert (cache / "benchmarks/base.json").read_text() == '{"own": true}'
    keys = sorted(json.loads(x)["key"] for x in (cache / "generations/m.jsonl").read_text().splitlines())
    assert keys == ["k1", "k2", "k3"]
    assert not (tmp_path / "runs/p/t/sft/seed0").exists()
    assert carry.restore() == 0
    _write(pilot / "cache/benchmarks/other.json", "{}")
    assert _carry(tmp_path).restore() == 1            # without a carry of its own, a preset still gets the pilot's


def test_save_partial_carries_a_running_stage_and_drops_it_once_the_stage_is_done(tmp_path, monkeypatch):
    work, cache = tmp_path / "runs/p", tmp_path / "runs/cache"
    _write(work / "t/sft/seed1/checkpoint.pt", "step 12")                       # training still running
    _write(work / "t/sft/seed0/checkpoint.pt", "stale")                        # finished: its log is there
    _write(work / "t/sft/seed0/train_log.json", "{}")
    _write(work / "t/s3ft/seed0/checkpoint.pt", "x" * 11)                      # too big for git (limit below)
    _write(cache / "benchmarks/journal/k1.jsonl", _jsonl("c1"))                # scoring still running
    _write(cache / "benchmarks/journal/k0.jsonl", _jsonl("c0"))                # its scores exist: done
    _write(cache / "benchmarks/k0.json", "{}")
    monkeypatch.setattr("repro.driver.carry.PARTIAL_MAX_BYTES", 10)
    commits: list = []
    carry = _carry(tmp_path, commits=commits)
    carry.save_partial("running")
    assert commits[-1][1] == ["results/p/_resume/cache/benchmarks/journal/k1.jsonl",
                              "results/p/_resume/work/t/sft/seed0/train_log.json",
                              "results/p/_resume/work/t/sft/seed1/checkpoint.pt"]
    assert carry.save("a stage") is None                                        # nothing changed, nothing dropped
    # training and scoring finish: the next save drops their carried resume points (committed as deletions)
    _write(work / "t/sft/seed1/train_log.json", "{}")
    (work / "t/sft/seed1/checkpoint.pt").unlink()
    _write(cache / "benchmarks/k1.json", "{}")
    carry.save("done")
    root = tmp_path / "results/p/_resume"
    assert not (root / "work/t/sft/seed1/checkpoint.pt").exists()
    assert not (root / "cache/benchmarks/journal/k1.jsonl").exists()
    assert {"results/p/_resume/work/t/sft/seed1/checkpoint.pt",
            "results/p/_resume/cache/benchmarks/journal/k1.jsonl"} <= set(commits[-1][1])


def test_restore_resumes_a_carried_checkpoint_only_where_nothing_newer_is_here(tmp_path):
    root = tmp_path / "results/p/_resume"
    _write(root / "work/t/sft/seed1/checkpoint.pt", "carried step 12")
    _write(root / "work/t/sft/seed2/checkpoint.pt", "carried step 3")
    _write(root / "work/t/sft/seed3/checkpoint.pt", "carried step 9")
    _write(root / "cache/benchmarks/journal/k1.jsonl", _jsonl("c1"))
    work = tmp_path / "runs/p"
    _write(work / "t/sft/seed2/checkpoint.pt", "local step 5")                  # this machine got further
    _write(work / "t/sft/seed3/train_log.json", "{}")                           # finished here
    carry = _carry(tmp_path)
    assert carry.restore() == 2                                                 # seed1's checkpoint, the journal
    assert (work / "t/sft/seed1/checkpoint.pt").read_text() == "carried step 12"
    assert (work / "t/sft/seed2/checkpoint.pt").read_text() == "local step 5"
    assert not (work / "t/sft/seed3/checkpoint.pt").exists()
    assert (tmp_path / "runs/cache/benchmarks/journal/k1.jsonl").read_text() == _jsonl("c1")
    assert carry.restore() == 0


def test_every_acts_at_most_once_per_interval(monkeypatch):
    from repro.driver import grid
    now = [100.0]
    monkeypatch.setattr(grid.time, "monotonic", lambda: now[0])
    calls: list = []
    tick = grid._every(60, calls.append)
    tick("a")
    now[0] += 59
    tick("b")
    now[0] += 2
    tick("c")
    tick("d")
    now[0] += 61
    tick("e")
    assert calls == ["c", "e"]
    never = grid._every(0, calls.append)
    now[0] += 1e6
    never("x")
    assert calls == ["c", "e"]

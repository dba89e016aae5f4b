"""Stage carry: with `run --commit`, a cell's finished stages are committed too, not only its result, so a fresh
clone resumes an unfinished cell at the stage it reached instead of at its start. A 1.5B cell on 2 CPU cores runs
for hours in stages of up to an hour each, and a session ends on a fresh machine whose work folder (runs/) is empty.

After each finished stage its artefacts are copied from the work folder into <results>/<preset>/_resume/ and
committed (only those paths):
  work/<task>/<method>/targets/*               a method's targets (shared by its seeds)
  work/<task>/<method>/seed<k>/train_log.json  + adapter/*: a finished training run (the adapter's few MB)
  cache/benchmarks/<key>.json                  one model's benchmark scores (the base's serve every tuned cell)
  cache/generations/<shard>.jsonl              the generations this run added (answers, own answers, paraphrases)
A run that starts copies back every carried file its work folder lacks; a generation shard is merged (the records
whose key is missing are appended), so the work copy is always a superset. Stages read only the work copy.
Cache files are restored from every preset's _resume/ under the same results folder, not only this preset's: the
cache is shared and content-keyed, and a study reuses its pilot's answers and benchmark scores.

A stage still running is carried too, every few minutes and when the run is stopped (`save_partial`): the generations
it has added so far, its training checkpoint (work/<task>/<method>/seed<k>/checkpoint.pt, a LoRA run's few MB) and
its benchmark journal (cache/benchmarks/journal/<key>.jsonl), so a session killed without warning loses at most
those minutes plus the chunk, checkpoint interval or scoring chunk it was in, not the whole stage. A carried
checkpoint or journal is deleted again (in the next commit) once its stage has finished: it would only resume a
stage that is done.

Not carried: anything of a finished cell that its result already holds, and a checkpoint larger than
PARTIAL_MAX_BYTES (a full fine-tune's optimiser state does not belong in git; that stage is redone on a new machine).
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

CARRY_DIR = "_resume"
PARTIAL_MAX_BYTES = 64 * 2**20
# never carried: locks and the temporaries of atomic writes (a running stage's resume points: _partial_files)
_SKIP_SUFFIXES = (".lock", ".tmp")


def _work_files(work: Path) -> list[Path]:
    """The finished-stage artefacts under a preset's work folder (targets folders, finished training runs)."""
    found: list[Path] = []
    for summary in sorted(work.glob("*/*/targets/targets_summary.json")):   # written last: the stage is done
        found += [p for p in sorted(summary.parent.iterdir()) if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(_SKIP_SUFFIXES)]
    for log_path in sorted(work.glob("*/*/seed*/train_log.json")):          # written last: training is done
        found.append(log_path)
        adapter = log_path.parent / "adapter"
        if adapter.is_dir():
            found += [p for p in sorted(adapter.rglob("*")) if p.is_file()]
    return found


def _partial_files(work: Path, cache_root: Path) -> list[Path]:
    """The resume points of stages still running: training checkpoints of seeds without a train log, benchmark
    journals without their score file."""
    found = [c for c in sorted(work.glob("*/*/seed*/checkpoint.pt"))
             if not (c.parent / "train_log.json").is_file() and c.stat().st_size <= PARTIAL_MAX_BYTES]
    found += [j for j in sorted((cache_root / "benchmarks" / "journal").glob("*.jsonl"))
              if not (cache_root / "benchmarks" / f"{j.stem}.json").is_file()]
    return found


def merge_jsonl(src: Path, dst: Path) -> int:
    """Append to `dst` the records of `src` whose "key" `dst` lacks (append-only generation shards); returns how
    many. A torn or unreadable line of either file is skipped, as the cache itself does."""
    def keyed(path: Path) -> dict[str, str]:
        out: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    out[json.loads(line)["key"]] = line
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        return out

    have, new = keyed(dst), keyed(src)
    missing = [line for key, line in new.items() if key not in have]
    if missing:
        text = dst.read_text(encoding="utf-8") if dst.is_file() else ""
        sep = "" if not text or text.endswith("\n") else "\n"
        with open(dst, "a", encoding="utf-8") as f:
            f.write(sep + "".join(line + "\n" for line in missing))
    return len(missing)


class StageCarry:
    """Copies finished stages into <results>/<preset>/_resume/ and commits them; restores them into a new work
    folder. `commit(paths, message)` commits exactly `paths` (repository-relative) and returns the short hash or
    None when nothing changed (repro.driver.grid.GitCommitter.commit_paths)."""

    def __init__(self, *, work: Path, cache_root: Path, results: Path,
                 commit: Callable[[list[Path], str], str | None],
                 touched: Callable[[], Iterable[Path]] = tuple) -> None:
        self.work = Path(work)                   # <work-dir>/<preset>
        self.cache_root = Path(cache_root)       # <work-dir>/cache (generations/, benchmarks/)
        self.root = Path(results) / CARRY_DIR    # <results>/<preset>/_resume
        self.commit = commit
        self.touched = touched                   # the cache files this run wrote: only those are carried

    def _carried(self, p: Path) -> Path:
        if p.is_relative_to(self.work):
            return self.root / "work" / p.relative_to(self.work)
        return self.root / "cache" / p.relative_to(self.cache_root)

    def _pairs(self, partial: bool) -> Iterable[tuple[Path, Path]]:
        """(work copy, carried copy) of everything that is carried now."""
        for p in _work_files(self.work):
            yield p, self._carried(p)
        for p in sorted(set(self.touched())):
            if p.is_file():
                yield p, self._carried(p)
        if partial:
            for p in _partial_files(self.work, self.cache_root):
                yield p, self._carried(p)

    def _finished_partials(self) -> list[Path]:
        """Carried checkpoints and journals whose stage has finished since (here or in the carried copy)."""
        done = []
        for c in sorted((self.root / "work").glob("*/*/seed*/checkpoint.pt")):
            rel = c.parent.relative_to(self.root / "work")
            if (c.parent / "train_log.json").is_file() or (self.work / rel / "train_log.json").is_file():
                done.append(c)
        for j in sorted((self.root / "cache" / "benchmarks" / "journal").glob("*.jsonl")):
            scores = f"{j.stem}.json"
            if (j.parent.parent / scores).is_file() or (self.cache_root / "benchmarks" / scores).is_file():
                done.append(j)
        return done

    def save(self, label: str, *, partial: bool = False) -> str | None:
        """Carry every finished stage whose carried copy is missing or differs (with `partial`, also the resume
        points of the stage still running), drop carried resume points whose stage has finished, and commit it all
        in one commit. Never fatal: a failed copy or commit is logged, the work copy stays where it is."""
        changed: list[Path] = []
        try:
            for src, dst in self._pairs(partial):
                if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                changed.append(dst)
            for stale in self._finished_partials():
                stale.unlink()
                changed.append(stale)           # committed as a deletion
            if not changed:
                return None
            sha = self.commit(changed, f"{self.work.name}: carry {label} (repro run --commit; resumable)")
            log.info("carried %d file(s) after %s: %s", len(changed), label, sha or "unchanged")
            return sha
        except Exception as e:  # noqa: BLE001 - carrying is a convenience: the run goes on without it
            log.error("carrying %s failed: %s", label, e)
            return None

    def save_partial(self, label: str) -> str | None:
        """`save`, plus the resume points of the stage still running (module docstring)."""
        return self.save(label, partial=True)

    def _carried_caches(self) -> list[Path]:
        """This preset's carried cache, then every other preset's under the same results folder. The cache is shared
        by presets on one machine (a study reuses its pilot's answers and benchmark scores) and keyed by content
        (model, prompt, decoding), so another preset's entries are only ever reused where they are the same
        computation; without them a fresh clone would redo, or answer anew, what the pilot already committed."""
        own = self.root / "cache"
        others = sorted(c for c in self.root.parent.parent.glob(f"*/{CARRY_DIR}/cache") if c != own)
        return [c for c in [own, *others] if c.is_dir()]

    def restore(self) -> int:
        """Copy into the work folder every carried stage it lacks; returns how many files were written. A stage is
        restored whole (a targets folder without its summary, a seed folder without its train log, is a stage a
        kill interrupted: the carried copy replaces it). Generation shards are merged. Cache files come from every
        preset's carry (`_carried_caches`), work stages only from this preset's. Called before any cell's state is
        read."""
        written = 0
        carried_work = self.root / "work"
        # a carried checkpoint of training that has not finished anywhere: resumed from unless this machine has one
        for ckpt in sorted(carried_work.glob("*/*/seed*/checkpoint.pt")):
            dst_seed = self.work / ckpt.parent.relative_to(carried_work)
            finished = (ckpt.parent / "train_log.json").is_file() or (dst_seed / "train_log.json").is_file()
            if not finished and not (dst_seed / ckpt.name).is_file():
                dst_seed.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ckpt, dst_seed / ckpt.name)
                written += 1
        units = [s.parent for s in carried_work.glob("*/*/targets/targets_summary.json")]
        units += [s.parent for s in carried_work.glob("*/*/seed*/train_log.json")]
        for unit in sorted(units):
            dst_unit = self.work / unit.relative_to(carried_work)
            marker = "targets_summary.json" if unit.name == "targets" else "train_log.json"
            if (dst_unit / marker).is_file():
                continue                        # finished here already: the work copy wins
            files = [p for p in sorted(unit.rglob("*")) if p.is_file()]
            for src in [p for p in files if p.name != marker] + [unit / marker]:    # the marker last
                dst = dst_unit / src.relative_to(unit)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                written += 1
        for carried_cache in self._carried_caches():
            for src in sorted(carried_cache.rglob("*")):
                if not src.is_file():
                    continue
                dst = self.cache_root / src.relative_to(carried_cache)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.parent.name == "generations":
                    written += merge_jsonl(src, dst) > 0
                elif not dst.exists():
                    shutil.copyfile(src, dst)
                    written += 1
        if written:
            log.info("restored %d carried file(s) from %s", written, self.root)
        return written

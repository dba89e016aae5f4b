"""Generation cache: append-only JSONL files, one per (model, adapter), keyed by a hash of everything that
determines an output (model and adapter fingerprints, chat template, backend, decoding parameters, prompt text and
its template tag).

Append-only text is what makes an interrupted build resumable (every finished batch is on disk, a torn last line
from a kill is skipped) and lets a finished cache be inspected or carried between machines.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)


def cache_key(identity: Mapping, params: Mapping, tag: str, prompt: str) -> str:
    blob = json.dumps({"identity": identity, "params": params, "tag": tag, "prompt": prompt}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """Maps keys to generation records; a record is a JSON object. Safe for concurrent appenders."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, dict[str, dict]] = {}
        self.written: set[Path] = set()      # the shard files this object appended to (a study carries them)

    def _path(self, shard: str) -> Path:
        return self.root / f"{shard}.jsonl"

    def _load(self, shard: str) -> dict[str, dict]:
        if shard in self._shards:
            return self._shards[shard]
        records: dict[str, dict] = {}
        path = self._path(shard)
        if path.is_file():
            self._repair(path)
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        rec = json.loads(line)
                        records[rec["key"]] = rec
                    except (json.JSONDecodeError, KeyError):
                        log.warning("%s:%d: skipping an unreadable cache line", path, lineno)
        self._shards[shard] = records
        return records

    @staticmethod
    def _repair(path: Path) -> None:
        """Cut a line torn by a kill mid-append, so the file is whole again (that generation is simply redone)."""
        with open(path, "rb+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                data = f.read()
                if data and not data.endswith(b"\n"):
                    keep = data.rfind(b"\n") + 1
                    log.warning("%s: cutting a torn last line (%d bytes) left by an interrupted run", path,
                                len(data) - keep)
                    f.truncate(keep)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def get_many(self, shard: str, keys: Iterable[str]) -> dict[str, dict]:
        records = self._load(shard)
        return {k: records[k] for k in keys if k in records}

    def put_many(self, shard: str, records: Mapping[str, dict]) -> None:
        if not records:
            return
        lines = "".join(json.dumps({"key": k, **v}, ensure_ascii=False) + "\n" for k, v in records.items())
        with open(self._path(shard), "ab+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                end = f.seek(0, os.SEEK_END)
                if end:
                    f.seek(end - 1)
                    if f.read(1) != b"\n":     # another writer was killed mid-line: start on a fresh line
                        lines = "\n" + lines
                f.write(lines.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self.written.add(self._path(shard))
        self._load(shard).update(records)

    def __len__(self) -> int:
        return sum(len(self._load(p.stem)) for p in self.root.glob("*.jsonl"))

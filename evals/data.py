"""One loader layer for every dataset the suite reads.

Rows come from a data directory the user names (``--data-dir`` or ``S3FT_DATA_DIR``) or, when no directory is
given, from the dataset hub through ``datasets.load_dataset``. Either way a task receives plain dicts in one schema,
validated row by row so that a bad file fails with its path, line and field instead of deep inside a run.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from repro.runtime.store import sha256_file

log = logging.getLogger(__name__)

DATA_DIR_ENV = "S3FT_DATA_DIR"
CHECKSUM_FILE = "SHA256SUMS"


class DataError(ValueError):
    """A user's input mistake: a data file that is missing, corrupt or has a row that does not fit its schema, a task
    spec, a recipe or a command-line value. The command line prints its message as one line and exits 2; anything
    else that escapes is a bug and keeps its traceback."""


def parse_json_line(line: str, where: str) -> Any:
    """One JSONL line parsed; a malformed one is a DataError naming `where` (file:line) and the column.

    The line is parsed without its line break, so a line cut short is reported at the column where it ends rather
    than at "line 2 column 1" of the text json saw."""
    text = line.rstrip("\r\n")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        short = (" - the line ends early; is it cut short?"
                 if e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated") else "")
        msg = e.msg.removesuffix(" at").removesuffix(":")
        raise DataError(f"{where}: invalid JSON ({msg} at column {e.colno}){short}") from None


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data directory to read from, or None to read from the hub.

    Precedence: an explicit argument, then ``$S3FT_DATA_DIR``. A named directory that does not exist is an error
    rather than a silent fall-back to the hub, because offline that fall-back fails much later and less clearly.
    """
    chosen = explicit if explicit not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist (from {'--data-dir' if explicit else DATA_DIR_ENV})")
    return path


# --- YAML files (task specs, recipes) ---------------------------------------------------------------------------

class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a key twice (plain PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):  # noqa: D102 - PyYAML's hook
        seen: dict = {}
        for key_node, _ in node.value:
            try:
                key = self.construct_object(key_node, deep=True)
                first = seen.get(key)
                seen.setdefault(key, key_node.start_mark.line)
            except TypeError:        # an unhashable key: PyYAML reports it below
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {first + 1}); keep one",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_yaml_text(text: str, where: str | os.PathLike) -> Any:
    """Parse YAML; a syntax error (or a repeated key) is a one-line DataError ``where:line:col: ...``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        pos = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise DataError(f"{where}{pos}: not valid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise DataError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file's content; a missing, unreadable or non-text file is a one-line DataError."""
    if path.is_dir():
        raise DataError(f"{path}: {what} is a folder, not a file")
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {what} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what}: {e.strerror}") from None


# --- checksums -------------------------------------------------------------------------------------------------

_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) because the grid asks for the same files many times."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        _sha_cache[key] = sha256_file(path)
    return _sha_cache[key]


def _expected_checksums(data_dir: Path) -> dict[str, str]:
    sums = data_dir / CHECKSUM_FILE
    if not sums.is_file():
        return {}
    expected = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[os.path.normpath(name.strip().lstrip("*"))] = digest
    return expected


_verified: set[tuple[str, str, str]] = set()


def verify_file(data_dir: Path, relpath: str) -> str:
    """Check one file against the directory's SHA256SUMS (when there is one) and return its sha256."""
    path = data_dir / relpath
    if not path.is_file():
        raise DataError(f"{path}: file not found in data directory {data_dir}")
    digest = file_sha256(path)
    if (str(data_dir), relpath, digest) in _verified:
        return digest
    expected = _expected_checksums(data_dir).get(os.path.normpath(relpath))
    if expected is None:
        if (data_dir / CHECKSUM_FILE).is_file():
            log.warning("%s is not listed in %s; its content is not verified", path, CHECKSUM_FILE)
    elif expected != digest:
        raise DataError(f"{path}: sha256 {digest} does not match {CHECKSUM_FILE} ({expected}); the file is corrupt "
                        "or modified")
    _verified.add((str(data_dir), relpath, digest))
    return digest


# --- row validation ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """A required field of a row: its name and accepted Python type(s); `item` checks list elements."""

    name: str
    type: type | tuple[type, ...]
    item: type | tuple[type, ...] | None = None
    nonempty: bool = False


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))


def check_row(row: Any, fields: Iterable[Field], where: str) -> dict:
    """Validate one row; `where` (e.g. "file.jsonl:12") prefixes every error message."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for f in fields:
        if f.name not in row:
            raise DataError(f"{where}: field '{f.name}' is missing")
        value = row[f.name]
        # bool is an int subclass; a boolean where a number is expected is a schema error, not a number.
        if not isinstance(value, f.type) or (isinstance(value, bool) and bool not in _as_tuple(f.type)):
            raise DataError(f"{where}: field '{f.name}' must be {_type_name(f.type)}, got {type(value).__name__}")
        if f.item is not None:
            for i, v in enumerate(value):
                if not isinstance(v, f.item):
                    raise DataError(f"{where}: field '{f.name}[{i}]' must be {_type_name(f.item)}, "
                                    f"got {type(v).__name__}")
        if f.nonempty and len(value) == 0:
            raise DataError(f"{where}: field '{f.name}' is empty")
    return row


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def read_jsonl(path: Path, fields: Iterable[Field] = ()) -> list[dict]:
    """Read a .jsonl or .jsonl.gz file, validating every row; errors name the file, line and field."""
    fields = list(fields)
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            row = parse_json_line(line, where)
            rows.append(check_row(row, fields, where))
    return rows


# --- sources -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where one split's rows come from.

    `local` is a path relative to the data directory; `hub` is (path, config name, split) for
    ``datasets.load_dataset``; `from_hub` maps a hub row to the local schema so tasks see one schema either way.
    """

    local: str
    hub: tuple[str, str | None, str] | None = None
    fields: tuple[Field, ...] = ()
    from_hub: Callable[[dict], dict] | None = field(default=None, compare=False)


@dataclass
class LoadedRows:
    rows: list[dict]
    origin: str                    # "local:<path>" or "hub:<path>/<name>/<split>"
    sha256: str | None             # of the local file; None for hub rows


def load_source(source: Source, data_dir: Path | None) -> LoadedRows:
    """Read a source from the data directory when there is one, else from the hub."""
    if data_dir is not None:
        digest = verify_file(data_dir, source.local)
        rows = read_jsonl(data_dir / source.local, source.fields)
        return LoadedRows(rows, f"local:{source.local}", digest)
    if source.hub is None:
        raise DataError(f"{source.local} has no hub equivalent; pass --data-dir or set {DATA_DIR_ENV}")
    hub_path, name, split = source.hub
    try:
        import datasets  # noqa: PLC0415  (only needed online)

        ds = datasets.load_dataset(hub_path, name, split=split)
    except Exception as e:  # the hub raises many types; the advice is the same for all of them
        raise DataError(f"could not load {hub_path} ({name or 'default'}, {split}) from the hub: {e}. "
                        f"Offline, pass --data-dir or set {DATA_DIR_ENV}") from e
    convert = source.from_hub or (lambda r: r)
    where = f"hub:{hub_path}/{name or 'default'}/{split}"
    rows = [check_row(convert(dict(r)), source.fields, f"{where} row {i}") for i, r in enumerate(ds)]
    return LoadedRows(rows, where, None)


def seeded_subset(items: list, limit: int | None, seed: int) -> list:
    """A reproducible subset of `limit` items, kept in their original order (None or >= len: all of them)."""
    if limit is None or limit >= len(items):
        return list(items)

    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def stable_hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def group_split(items: list[dict], key: Callable[[dict], str], test_fraction: float, seed: int) -> tuple[list, list]:
    """Split by a group key (e.g. a passage title) hashed with a seed, so no group straddles train and test and the
    assignment of a group never depends on which other rows are present (the hub and local files agree)."""
    train, test = [], []
    for row in items:
        h = int(hashlib.sha256(f"{seed}:{key(row)}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (test if h < test_fraction else train).append(row)
    return train, test

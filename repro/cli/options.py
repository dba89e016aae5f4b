"""Options several verbs share, and the folders they default to."""
from __future__ import annotations

import argparse
from pathlib import Path

from evals.data import DataError, resolve_data_dir
from repro.runtime.models import resolve as resolve_model

DEFAULT_WORK = "runs"      # ignored by git: a user's runs never mix with the committed results/
COMMITTED_RESULTS = "results"


def one_line(message: object) -> str:
    """A user-error message as the one line the command line prints."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def positive_int(text: str) -> int:
    """argparse type of counts and sizes: an integer >= 1 (0 would select nothing and write empty results)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n} (leave the option out for all items)")
    return n


def minutes(text: str) -> float:
    """argparse type of an interval in minutes: a finite number >= 0."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not (0 <= x < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a number of minutes >= 0, got {text}")
    return x


def check_model(name: str | None) -> None:
    """A model name that names no model is an input mistake: one line, before any folder is made or model loads."""
    if name is None:
        return
    try:
        resolve_model(name)
    except (ValueError, FileNotFoundError) as e:
        raise DataError(f"--model {name}: {e} (python -m repro ls models)") from None


def check_out_file(path: str | None, flag: str = "--out") -> None:
    """An output path that is a folder is an input mistake, found before the work rather than at the final write."""
    if path is not None and Path(path).is_dir():
        raise DataError(f"{flag} {path}: is a folder; name a file to write (e.g. {Path(path) / 'out.jsonl'})")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="benchmark data directory (default: $S3FT_DATA_DIR; neither: the dataset hub)")


def add_common(sp: argparse.ArgumentParser) -> None:
    """--data-dir, --work-dir, --results-dir, --quiet and --allow-unsandboxed-code."""
    add_data_dir(sp)
    sp.add_argument("--work-dir", default=DEFAULT_WORK,
                    help=f"working folder for targets, adapters, caches and the run log (default: "
                         f"{DEFAULT_WORK}/, ignored by git)")
    sp.add_argument("--results-dir", default=None,
                    help=f"where result files go (default: the --work-dir, i.e. {DEFAULT_WORK}/<preset>/...); "
                         f"--results-dir {COMMITTED_RESULTS} writes where committed results live, for "
                         "committing them")
    sp.add_argument("--quiet", action="store_true", help="no progress display")
    sp.add_argument("--allow-unsandboxed-code", action="store_true",
                    help="run MBPP's generated code even where no sandbox can keep it away from your files "
                         "(no bubblewrap, not root, no user namespaces); it can then change or delete "
                         "anything your user can. Same as S3FT_ALLOW_UNSANDBOXED_CODE=1")


def data_dir(args: argparse.Namespace) -> Path | None:
    return resolve_data_dir(args.data_dir)


def results_root(args: argparse.Namespace) -> Path:
    """--results-dir, else the work folder: results land in runs/<preset>/... unless asked for results/."""
    return Path(args.results_dir or args.work_dir)

"""A run's detail goes to a log file in its folder; the terminal keeps one progress display and the summary.

Libraries write progress bars and warnings to stdout/stderr (Python objects and the C file descriptors alike), so
both descriptors are pointed at the log for the duration of the grid, and the display writes to a saved copy of the
terminal's stderr."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def output_to_log(path: Path) -> Iterator[object]:
    """Redirect fds 1 and 2 (and sys.stdout/sys.stderr) to `path` (appending); yields the terminal's stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    log_file = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    log_file.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
    old_streams = sys.stdout, sys.stderr
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
    try:
        for fd in (1, 2):
            os.dup2(log_file.fileno(), fd)
        sys.stdout = sys.stderr = log_file
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stdout, sys.stderr = old_streams
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        root.handlers = old_handlers
        root.setLevel(old_level)
        log_file.close()
        terminal.close()


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return ""

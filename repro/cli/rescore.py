"""`python -m repro rescore`: add reading metrics computed from stored responses to stored cells."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.cli import options
from repro.driver.rescore import rescore


def add_parser(sub) -> None:
    sp = sub.add_parser("rescore", help="re-score stored cells: reading metrics from their stored responses",
                        description=(
        "For every result.json under PATH: compute from the stored responses the official SQuAD v1.1 exact match "
        "and F1 (max over gold answers), containment of a gold alias and the answer length in words for each "
        "reading task (squad, nq_open), record each item's passage (SQuAD title) for clustered comparisons, and "
        "set each task's headline metric from the preset's recipe. Verdicts are left as they are; the items "
        "file's sha256 is updated and a provenance.rescored record added. Idempotent."))
    sp.add_argument("paths", nargs="+", help="result.json files or folders to search")
    options.add_data_dir(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    changed, total = rescore([Path(p) for p in args.paths], options.data_dir(args))
    if not total:
        print(f"no result.json under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    print(f"re-scored {changed}/{total} result files ({total - changed} already up to date)")
    return 0

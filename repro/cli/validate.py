"""`python -m repro validate`: check result files against the JSON schema."""
from __future__ import annotations

import argparse
import sys

from repro.driver.schema import find_results, validate_result


def add_parser(sub) -> None:
    sp = sub.add_parser("validate", help="check result files against the schema")
    sp.add_argument("paths", nargs="+", help="result.json files or folders to search")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = [p for root in args.paths for p in find_results(root)]
    if not paths:
        print(f"no result.json under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    bad = 0
    for p in paths:
        problems = validate_result(p)
        if problems:
            bad += 1
            print("\n".join(problems))
    print(f"{len(paths) - bad}/{len(paths)} result files valid")
    return 1 if bad else 0

"""`python -m repro power`: minimum detectable effects of a study's sizes, from item-level results."""
from __future__ import annotations

import argparse

from repro.report import power


def add_parser(sub) -> None:
    sp = sub.add_parser("power", help="minimum detectable effects of a study's sizes, from item-level results",
                        description=power.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    power.add_arguments(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return power.main(args)

"""Command line of s3ft-bench: ``python -m repro <verb> --help`` explains each verb.

  run       the task x method x seed grid of a preset (resumable; --dry-run prints the plan)
  build     one method's training targets for one task (--export: as a chat dataset for TRL, LLaMA-Factory, axolotl)
  compare   base vs SFT vs S3FT on your task (a YAML task file) with the headline benchmarks, one command
  train     the training core on a targets.jsonl
  eval      in-domain / cross-task accuracy and generalization benchmarks of a model (+ adapter)
  judge     judge a JSONL of responses with a task's judge
  models    fetch / list models
  ls        list methods, tasks, presets, models, benchmarks
  validate  check result files against the schema
  rescore   add reading metrics (official SQuAD EM/F1, containment, answer length) to stored cells
  doctor    the code sandbox, data, models and device this machine gives a run
  power     minimum detectable effects (80% power) of a study's sizes, from committed item-level results
"""
# (The docstring above is the top-level --help text.) One module per verb, each with `add_parser(subparsers)`,
# which declares the verb's arguments and sets `func`, and `run(args) -> int`, the exit code; VERBS lists them in
# --help order. A verb parses, calls the driver (repro/driver/) and prints: the work itself lives below.
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from evals.data import DataError
from evals.judges.sandbox import SandboxUnavailable, allow_unsandboxed
from repro.cli import build, compare, doctor, judge, ls, models, options, power, rescore, run, train, validate
from repro.cli import eval as eval_

VERBS = (run, build, compare, train, eval_, judge, models, doctor, ls, validate, rescore, power)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (which verb, what is wrong, where the help is), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m repro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if getattr(args, "allow_unsandboxed_code", False):
        allow_unsandboxed()
    try:
        return args.func(args)
    except (DataError, SandboxUnavailable) as e:     # an input mistake: one line, no traceback (a bug keeps its own)
        print(f"error: {options.one_line(e)}", file=sys.stderr)
        return 2

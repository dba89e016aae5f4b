"""`python -m repro compare`: base vs SFT vs S3FT on your task (a YAML task file) with the headline benchmarks."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.cli import options
from repro.cli import run as run_verb
from repro.driver.compare import compare_recipe, write_recipe
from repro.driver.recipes import check_file_tasks


def add_parser(sub) -> None:
    sp = sub.add_parser("compare", help="base vs SFT vs S3FT on your task, with the headline benchmarks", description=(
        "Run base, SFT and S3FT on one task (a YAML task file or a task name) with a preset's settings - its model, "
        "subset sizes, training hyper-parameters and generalization benchmarks on subsets - and print in-domain "
        "accuracy, target sources, benchmark drops and the paired comparisons (bootstrap CIs, McNemar and "
        "permutation p values). The preset's tasks are replaced by yours and its model by --model. It runs through "
        "the grid driver (progress line, ETA), so rerunning the same command resumes it. Results: "
        "<results-dir>/compare-<task>/ (or --name)."))
    sp.add_argument("--task", required=True,
                    help="a YAML task file (see docs/tasks-and-judges.md, Your own task) or a task name")
    sp.add_argument("--model", help="model to compare on (default: the preset's)")
    sp.add_argument("--preset", default="quick", help="preset whose settings the comparison takes (default: quick)")
    sp.add_argument("--train", type=options.positive_int,
                    help="training examples (seeded subset; default: the preset's first task's)")
    sp.add_argument("--test", type=options.positive_int,
                    help="test examples (seeded subset; default: the preset's first task's)")
    sp.add_argument("--methods", nargs="+", help="methods (default: base sft s3ft)")
    sp.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: the preset's)")
    sp.add_argument("--name", help="name of the comparison's results folder (default: compare-<task>)")
    sp.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    sp.add_argument("overrides", nargs="*", help="recipe overrides key=value (e.g. train.epochs=2)")
    options.add_common(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raw = compare_recipe(args.preset, args.task, model=args.model, train=args.train, test=args.test,
                         methods=args.methods, seeds=args.seeds, name=args.name, overrides=args.overrides)
    options.check_model(raw["model"])
    check_file_tasks(raw["tasks"], options.data_dir(args))     # every row, before a recipe is written or a model loads
    path = write_recipe(raw, Path(args.work_dir))
    print(f"compare: {raw['name']} = preset {args.preset} with task {list(raw['tasks'])[0]} and model {raw['model']} "
          f"({', '.join(raw['methods'])}; recipe {path})", file=sys.stderr)
    # The normal grid driver, as `repro run` runs it: resumable, one progress line, and it ends by printing the
    # comparison tables (repro.report.run_summary). Its arguments are parsed by `run`'s own parser, so they get
    # exactly the defaults a `repro run` command line gets.
    run_argv = ["run", "--preset", str(path), "--work-dir", args.work_dir,
                *(["--results-dir", args.results_dir] if args.results_dir else []),
                *(["--data-dir", args.data_dir] if args.data_dir else []), *(["--quiet"] if args.quiet else []),
                *(["--allow-unsandboxed-code"] if args.allow_unsandboxed_code else []),
                *(["--dry-run"] if args.dry_run else [])]
    parser = argparse.ArgumentParser(prog="python -m repro")
    run_verb.add_parser(parser.add_subparsers(dest="verb", required=True))
    return run_verb.run(parser.parse_args(run_argv))

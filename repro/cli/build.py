"""`python -m repro build`: one method's training targets for one task (and, with --export, as chat datasets)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from evals.data import DataError
from repro.cli import options
from repro.driver.cell import Cell, CellRunner
from repro.driver.export import export_cell_targets
from repro.driver.judging import require_sandbox
from repro.driver.recipes import READING_TASKS, adhoc_recipe, check_file_tasks, load_recipe, task_entry


def add_parser(sub) -> None:
    sp = sub.add_parser("build", help="build one method's training targets for one task", description=(
        "Predict with the base model, judge, paraphrase as the method requires, and write targets.jsonl, "
        "candidates.jsonl and targets_summary.json (shares per source, log p under the base model). Everything "
        "generated is cached: an interrupted build resumes, and other methods reuse the predictions."))
    sp.add_argument("--task", required=True, help="task name, or a YAML task file (see README, Your own task)")
    sp.add_argument("--method", required=True)
    sp.add_argument("--model", help="base model: registered name, local folder or hub id (default: the preset's)")
    sp.add_argument("--preset", help="take model and settings from a preset instead of the flags")
    sp.add_argument("--limit", type=options.positive_int, help="seeded subset of the training split (default: all)")
    sp.add_argument("--max-new-tokens", type=options.positive_int)
    sp.add_argument("--paraphrase-max-new-tokens", type=options.positive_int)
    sp.add_argument("--judge", choices=["match", "llm"],
                    help="the reading tasks squad and nq_open only: judge kind (a task file's judge is its spec's)")
    sp.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    sp.add_argument("--batch-size", type=options.positive_int, default=16)
    sp.add_argument("--export", nargs="+", metavar="FORMAT",
                    choices=["messages", "prompt_completion", "alpaca", "sharegpt", "all"],
                    help="also write the targets as a chat dataset: messages (TRL SFTTrainer / HF chat templates), "
                         "prompt_completion (TRL, loss on the answer only), alpaca and sharegpt (LLaMA-Factory, "
                         "axolotl), or all; each row keeps its id and source (model / paraphrase / gold) in metadata")
    sp.add_argument("--export-dir", help="folder for the exported files (default: the targets folder)")
    sp.add_argument("overrides", nargs="*", help="preset overrides key=value (with --preset)")
    options.add_common(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    preset = load_recipe(args.preset, args.overrides) if args.preset else None
    if preset is not None and args.task in preset.tasks:       # a task of the preset, by its name
        task_name, task_settings = args.task, preset.tasks[args.task]
    else:
        task_name, task_settings = task_entry(args.task, {})   # a YAML task file is keyed by its name
    if args.judge and task_name not in READING_TASKS:
        where = "the judge: key of its task file" if (task_settings or {}).get("file") else "built in"
        raise DataError(f"--judge {args.judge}: only the reading tasks {', '.join(sorted(READING_TASKS))} take "
                        f"--judge; the judge of task {task_name} is {where}; drop --judge")
    if not args.preset and not args.model:
        raise DataError("build needs a model: pass --model NAME (python -m repro ls models) or --preset NAME")
    options.check_model(args.model)
    settings = {"train": args.limit, **task_settings}
    for key in ("max_new_tokens", "paraphrase_max_new_tokens", "judge"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    recipe = adhoc_recipe(args.model, tasks={task_name: settings}, methods=(args.method,), backend=args.backend,
                          batch_size=args.batch_size, preset=args.preset, overrides=args.overrides)
    recipe.tasks.setdefault(task_name, settings)               # a preset plus a task file it does not list
    require_sandbox([task_name], recipe.tasks)
    data_dir = options.data_dir(args)
    check_file_tasks({task_name: recipe.tasks[task_name]}, data_dir)    # a broken task fails before a model loads
    runner = CellRunner(recipe, data_dir=data_dir, work_root=Path(args.work_dir),
                        results_root=options.results_root(args), progress=not args.quiet)
    cell = Cell(recipe.name, task_name, args.method, 0)
    summary, reused = runner.build_targets(cell)
    out = runner.paths(cell)["targets"]
    print(json.dumps({k: summary[k] for k in ("n_examples", "n_targets", "sources", "acceptance", "logp",
                                              "generation_stats", "seconds") if k in summary}, indent=2))
    print(f"{'reused' if reused else 'wrote'} targets: {summary.get('n_targets', '?')} rows in "
          f"{out / 'targets.jsonl'} (candidates.jsonl and targets_summary.json beside it)")
    if args.export:
        folder = Path(args.export_dir) if args.export_dir else None
        for fmt, n, path in export_cell_targets(runner, cell, args.export, folder):
            print(f"exported {n} rows ({fmt}): {path}")
    return 0

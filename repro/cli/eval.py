"""`python -m repro eval`: in-domain / cross-task accuracy and generalization benchmarks of a model (+ adapter)."""
from __future__ import annotations

import argparse
from pathlib import Path

from repro.cli import options
from repro.driver.cell import CellRunner
from repro.driver.evaluate import evaluate_model
from repro.driver.judging import require_sandbox
from repro.driver.recipes import adhoc_recipe, check_file_tasks, resolve_task_files


def add_parser(sub) -> None:
    sp = sub.add_parser("eval", help="evaluate a model (+ adapter) on tasks and benchmarks", description=(
        "Accuracy on each task's test split with its judge (the first task is 'in-domain', all are the cross-task "
        "row) and generalization benchmarks through lm-eval with the project's local YAMLs. With --adapter the "
        "base model is scored too and drops are reported. Writes one result file (schema-checked)."))
    sp.add_argument("--model", required=True)
    sp.add_argument("--adapter", help="PEFT adapter folder")
    sp.add_argument("--tasks", nargs="+", required=True)
    sp.add_argument("--limit", type=options.positive_int, help="seeded subset of each test split")
    sp.add_argument("--benchmarks", nargs="*", help="e.g. mmlu truthfulqa_mc2 hellaswag winogrande arc_challenge")
    sp.add_argument("--benchmark-limit", type=options.positive_int, help="seeded subsample per benchmark (MMLU: total)")
    sp.add_argument("--chat-template", action="store_true", help="apply the chat template to benchmark prompts")
    sp.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    sp.add_argument("--batch-size", type=options.positive_int, default=16)
    sp.add_argument("--forgetting-prompts", type=int, default=32)
    sp.add_argument("--out", required=True, help="result JSON path")
    options.add_common(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options.check_model(args.model)
    options.check_out_file(args.out)
    tasks = resolve_task_files({t: {"test": args.limit} for t in args.tasks})   # YAML task files: by their names
    benchmarks = {b: {"limit": args.benchmark_limit} for b in (args.benchmarks or [])}
    recipe = adhoc_recipe(args.model, tasks=tasks, benchmarks=benchmarks, backend=args.backend,
                          batch_size=args.batch_size, forgetting_prompts=args.forgetting_prompts)
    recipe.evaluation["chat_template"] = args.chat_template
    require_sandbox(recipe.tasks, recipe.tasks)
    data_dir = options.data_dir(args)
    check_file_tasks(recipe.tasks, data_dir)                    # a broken task fails before a model loads
    runner = CellRunner(recipe, data_dir=data_dir, work_root=Path(args.work_dir),
                        results_root=options.results_root(args), progress=not args.quiet)
    out = Path(args.out)
    result = evaluate_model(runner, Path(args.adapter) if args.adapter else None, out)
    for name, s in result["cross_task"].items():
        print(f"{name}: acc={s['acc,none']:.4f} ± {s['acc_stderr,none']:.4f} (n={s['n']})")
    if result["generalization"]:
        for name, r in result["generalization"]["results"].items():
            metric = result["generalization"]["primary_metric"][name]
            print(f"{name}: {metric}={r[metric]:.4f}")
    print(f"wrote {out}")
    return 0

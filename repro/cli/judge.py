"""`python -m repro judge`: judge a JSONL of responses with a task's judge."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from evals.data import DataError
from repro.cli import options
from repro.driver import judging
from repro.runtime.store import atomic_write_jsonl


def add_parser(sub) -> None:
    sp = sub.add_parser("judge", help="judge a JSONL of responses", description=(
        "Each input line has 'response' and either 'id' (an example id of the task) or the gold fields inline "
        "(gsm8k: answer; mbpp: test_list [, test_setup_code]; squad/nq_open: answers). Writes one verdict per "
        "line, in order, with 'correct' and 'reason'; the last line printed is accuracy=<float> n=<int>."))
    sp.add_argument("--task", required=True)
    sp.add_argument("--predictions", required=True)
    sp.add_argument("--out", help="verdicts JSONL (default: printed)")
    sp.add_argument("--judge", choices=["match", "llm"], help="reading tasks: judge kind (default match)")
    sp.add_argument("--judge-model", help="model for --judge llm")
    options.add_common(sp)
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options.check_out_file(args.out)
    task = judging.judge_task(args.task, args.judge)
    if getattr(task, "judge_kind", None) == "llm":
        judge_model = judging.llm_judge_model(task, args.judge_model)
        if not judge_model:
            raise DataError(f"task {task.name}: the LLM judge needs a model; pass --judge-model NAME")
        judging.use_llm_judge(task, judge_model, Path(args.work_dir) / "cache" / "generations")
    path = Path(args.predictions)
    judged = judging.judge_predictions(task, judging.read_predictions(path), path, data_dir=args.data_dir,
                                       progress=not args.quiet)
    if args.out:
        atomic_write_jsonl(args.out, judged.rows)
    else:
        for r in judged.rows:
            print(json.dumps(r, ensure_ascii=False))
    print(f"accuracy={judged.accuracy:.6f} n={judged.n}")
    return 0

"""`python -m repro train`: the training core on a targets.jsonl (also under `accelerate launch`)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from evals.data import DataError
from methods.train_config import TrainConfig
from repro.cli import options
from repro.driver.recipes import read_targets, train_options


def add_parser(sub) -> None:
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
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = TrainConfig.from_dict(train_options(args.config, args.overrides))
    except (ValueError, TypeError) as e:
        raise DataError(f"training options{f' ({args.config})' if args.config else ''}: {e}") from None
    options.check_model(args.model)
    records = read_targets(Path(args.targets))
    from methods.train import end_process_group, train  # noqa: PLC0415  (torch, accelerate, peft: only when training)

    log_ = train(args.model, records, cfg, Path(args.out), progress=not args.quiet)
    end_process_group()
    if int(os.environ.get("RANK", "0")) == 0:          # under accelerate launch, one process reports
        print(json.dumps({k: log_[k] for k in ("final_loss", "total_steps", "wall_time_s", "trained_tokens_per_s",
                                               "trainable_params", "world_size")}, indent=2))
        print(f"adapter: {Path(args.out) / 'adapter'}")
    return 0

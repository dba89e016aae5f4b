"""The report layer: the S3FT paper's tables (Markdown + LaTeX) and figures (PNG) from result files, beside the
paper's published values (results/paper_reference.json). Reads JSON only: no GPU, no model, no network.

    load.py            finding and loading result files (CellResult), a preset's Grid and its missing cells
    measures.py        per-item scores, headline metric and benchmarks, training cost, candidate log p
    formatting.py      points, effects, CIs, p-values; Table as Markdown / LaTeX with notes and provenance
    tables.py          Tables 1-3, cross-task matrix, forgetting signal, cost
    generalization.py  Table 4 (benchmark drops, the paper-four average drop)
    comparisons.py     paired comparisons between methods with n, CI, p and MDE
    figures.py         Figure 2, in-domain gain vs drop, cross-task heatmap
    render.py          writing a preset's outputs and MANIFEST.json (paper_tables.py is a thin script over it)
    summary.py         run_summary: what a finished ``python -m repro run`` / ``compare`` prints
    power.py           ``python -m repro power``: minimum detectable effects of a study's sizes

Units: points (percent); drops in the PAPER'S sign, base - tuned (positive = forgetting); result files store
tuned - base. Statistics (evals.stats): seeds are replicates, items the sampling unit, fixed bootstrap seeds, so
reruns on the same inputs are byte-identical. A layer above the driver: it imports driver, methods, evals and
runtime, never the command line.
"""
from repro.report.load import CellResult, Grid, find_presets, load_cells, load_reference
from repro.report.render import render_preset, render_results
from repro.report.summary import run_summary

__all__ = ["CellResult", "Grid", "find_presets", "load_cells", "load_reference", "render_preset", "render_results",
           "run_summary"]

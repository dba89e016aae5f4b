"""What a finished ``python -m repro run`` (and ``repro compare``) prints: the preset's in-domain scores, target
sources, generalization drops and paired comparisons, as Markdown - the same tables paper_tables.py writes."""
from __future__ import annotations

from pathlib import Path

from repro.report.comparisons import table_comparisons
from repro.report.formatting import mark_missing
from repro.report.generalization import table4
from repro.report.load import PAPER_REFERENCE, Grid, load_cells, load_reference
from repro.report.tables import table2, table3


def run_summary(results: Path, preset: str) -> str:
    """Tables 2-4 and the comparisons of `preset` under `results` (the results root holding <preset>/), as
    Markdown; '' when the preset has no results there, or when the paper's reference values are not beside the
    package (a non-editable install has no results/paper_reference.json)."""
    cells = load_cells(results, preset)
    if not cells or not PAPER_REFERENCE.is_file():
        return ""
    g = Grid(preset, cells, load_reference())
    return "\n\n".join(tb.markdown() for tb in mark_missing(g.missing, [table2(g), table3(g), table4(g),
                                                                    table_comparisons(g)]))

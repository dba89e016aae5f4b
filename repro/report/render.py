"""Writing one preset's tables (Markdown + LaTeX) and figures (PNG), with a manifest of what was written."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import tabulate

from repro.report.claims import CLAIM_NOTES, claim_rows, claims_json, claims_markdown, claims_table, load_claims
from repro.report.comparisons import comparison_rows, table_comparisons
from repro.report.figures import fig_claims, fig_cross_task, fig_gain_vs_drop, fig_logp
from repro.report.formatting import mark_missing
from repro.report.generalization import table4
from repro.report.load import CellResult, Grid, find_presets, load_cells, load_reference
from repro.report.tables import (
    table1,
    table2,
    table3,
    table_cost,
    table_cross_task,
    table_forgetting,
    table_measured_time,
)
from repro.runtime.store import sha256_file


def render_preset(preset: str, cells: list[CellResult], ref: dict, out: Path,
                  echo: Callable[[str], None] = print) -> list[Path]:
    """Write every table and figure of one preset under `out`; returns the files written (manifest last)."""
    import matplotlib  # noqa: PLC0415  (heavy; only its version is recorded here, the figures import it lazily too)

    g = Grid(preset, cells, ref)
    tdir, fdir = out / "tables" / preset, out / "figures" / preset
    tdir.mkdir(parents=True, exist_ok=True)
    cross, labels, accs, deltas = table_cross_task(g)
    crows = comparison_rows(g)
    claims = claim_rows(g, crows)
    tables = mark_missing(g.missing, [claims_table(g, claims, [c for r in crows for c in r["cells"]]), table1(g),
                                      table2(g), table3(g), table4(g), table_comparisons(g, crows), cross,
                                      table_forgetting(g), table_cost(g), table_measured_time(g)])
    written = []
    for tb in tables:
        md = tb.markdown()
        echo(md)
        for ext, text in (("md", md), ("tex", tb.latex(preset))):
            p = tdir / f"{tb.name}.{ext}"
            p.write_text(text, encoding="utf-8")
            written.append(p)
    cj = tdir / "claims.json"       # the claim rows as data: the across-presets outputs and README block use it
    cj.write_text(claims_json(claims), encoding="utf-8")
    written.append(cj)
    for name, draw in (("claims", lambda p: fig_claims(claims, f"The paper's claims vs this suite: S3FT − SFT "
                                                                f"({preset})", p)),
                       ("fig2_logp_hist", lambda p: fig_logp(g, p)),
                       ("gain_vs_drop", lambda p: fig_gain_vs_drop(g, p)),
                       ("cross_task_heatmap", lambda p: fig_cross_task(g, labels, accs, deltas, p))):
        draw(fdir / f"{name}.png")
        written.append(fdir / f"{name}.png")
    manifest = {"preset": preset, "matplotlib": matplotlib.__version__, "tabulate": tabulate.__version__,
                "files": {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(written)}}
    mpath = tdir / "MANIFEST.json"
    mpath.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return written + [mpath]


def render_results(results: Path, out: Path, presets: list[str] | None = None,
                   echo: Callable[[str], None] = print) -> list[Path]:
    """Render `presets` (default: every preset found) from the results root `results` into `out`, saying what
    was written and which presets have no results; returns every file written."""
    presets = presets or find_presets(results)
    if not presets:
        echo(f"no results under {results}; run python -m repro run --preset NAME")
        return []
    ref = load_reference()
    written: list[Path] = []
    for preset in presets:
        cells = load_cells(results, preset)
        if not cells:
            echo(f"no results for preset {preset} under {results}; run python -m repro run --preset {preset}")
            continue
        files = render_preset(preset, cells, ref, out, echo)
        echo(f"wrote {len(files)} files under {out / 'tables' / preset} and {out / 'figures' / preset}")
        written += files
    written += render_across_presets(out, echo)
    return written


def render_across_presets(out: Path, echo: Callable[[str], None] = print) -> list[Path]:
    """The claims table and figure across every preset whose claims.json is under <out>/tables (rebuilt from those
    files alone: no statistic is recomputed)."""
    rows = load_claims(out / "tables")
    if not rows:
        return []
    md, png = out / "tables" / "claims_all_presets.md", out / "figures" / "claims_all_presets.png"
    md.write_text("### The paper's claims across presets: S3FT − SFT, paper vs this suite\n\n" + claims_markdown(rows)
                  + "".join(f"\n- {n}" for n in CLAIM_NOTES) + "\n", encoding="utf-8")
    fig_claims(rows, "The paper's claims vs this suite, every preset: S3FT − SFT", png)
    echo(f"wrote {md} and {png} ({len({r['preset'] for r in rows})} presets)")
    return [md, png]

"""How numbers and tables print: points, mean ± sd, effects with CIs, p-values, and a table as Markdown or LaTeX
(with its notes and a provenance footer). Nothing here depends on the clock: reruns must be byte-identical."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from tabulate import tabulate

from evals.stats import aggregate_seeds
from repro.driver.cell import Cell
from repro.report.load import CellResult
from repro.runtime.provenance import hardware_label


def pts(x: float | None, sign: bool = False) -> str:
    """A fraction as points with one decimal; never prints "-0.0"."""
    if x is None:
        return "—"
    v = round(100.0 * x, 1) + 0.0
    return f"{v:+.1f}" if sign else f"{v:.1f}"


def mean_sd(values: list[float], sign: bool = False, scale_pts: bool = True) -> str:
    """mean ± sd over seeds (sd omitted for one seed: it would be 0 and mean nothing). scale_pts=False prints raw
    values (nats) with 4 significant digits instead of points."""
    if not values:
        return "—"
    agg = aggregate_seeds(values)
    if scale_pts:
        txt, sd = pts(agg["mean"], sign), pts(agg["std"])
    else:
        # float noise (e.g. 1e-15 between identical runs) is printed as 0, not as a spurious spread
        noise = agg["std"] <= 1e-9 * max(1.0, abs(agg["mean"]))
        txt, sd = (f"{agg['mean']:+.4g}" if sign else f"{agg['mean']:.4g}"), ("0" if noise else f"{agg['std']:.2g}")
    return txt + (f" ± {sd}" if agg["n"] > 1 else "")


def words(vals: list[float]) -> str:
    """mean ± sd of an answer length in words (one decimal, not points)."""
    agg = aggregate_seeds(vals)
    return f"{agg['mean']:.1f}" + (f" ± {agg['std']:.1f}" if agg["n"] > 1 else "")


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def p_txt(p: float | None) -> str:
    return "—" if p is None else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def effect_digits(x: float, scale: float = 100.0) -> int:
    """Decimals for an effect: 1, or as many as a non-zero effect needs to show 2 significant digits (never
    printed as +0.0 when it is not 0)."""
    v = abs(scale * x)
    if v == 0.0 or round(v, 1) != 0.0:
        return 1
    return min(8, 1 - int(math.floor(math.log10(v))))


def effect_txt(x: float, scale: float = 100.0, digits: int | None = None) -> str:
    d = effect_digits(x, scale) if digits is None else digits
    return f"{round(scale * x, d) + 0.0:+.{d}f}"


def effect_ci_txt(x: float, ci: list[float], scale: float = 100.0) -> str:
    d = effect_digits(x, scale)
    return f"{effect_txt(x, scale, d)} [{effect_txt(ci[0], scale, d)}, {effect_txt(ci[1], scale, d)}]"


def mde_txt(m: float, scale: float = 100.0) -> str:
    if not math.isfinite(m):
        return "none detectable"
    return f"{scale * m:.1f}" if scale != 1.0 else f"{m:.4f}"     # points to 0.1; nats to 4 decimals


def tex(s: str) -> str:
    out = "".join("\\" + ch if ch in "&%$#_{}" else {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}",
                                                      "^": r"\textasciicircum{}"}.get(ch, ch) for ch in s)
    for u, t in (("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("≤", r"$\le$"), ("×", r"$\times$"), ("†", r"\dag{}"),
                 ("—", "---"), ("−", "-"), ("‖", r"$\|$"), ("→", r"$\to$")):
        out = out.replace(u, t)
    return out


def missing_line(missing: list[Cell]) -> str:
    """The warning a table of a partial preset carries: which cells its numbers lack."""
    return (f"Missing cells ({len(missing)}, defined by the preset's recipe but without a result here; the table "
            f"shows what is present): {', '.join(c.label for c in missing)}.")


@dataclass
class Table:
    name: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    cells: list[CellResult]
    notes: list[str] = field(default_factory=list)
    missing: list[Cell] = field(default_factory=list)   # set by the renderer for a partial preset

    def footer(self) -> list[str]:
        """Where the numbers came from: preset, model, seeds, hardware, commits, dates (never "now": reruns must
        be byte-identical)."""
        cells = list({c.path: c for c in self.cells}.values())   # a cell may feed several rows: count it once
        prov = [c.doc["provenance"] for c in cells]
        models = sorted({f"{p['model'].get('name')} ({str(p['model'].get('fingerprint'))[:12]})" for p in prov})
        commits = sorted({f"{str(p.get('git_hash'))[:10]}{'+dirty' if p.get('git_dirty') else ''}" for p in prov})
        dates = sorted(p["date"] for p in prov)
        return [f"Preset: {', '.join(sorted({c.doc['cell']['preset'] for c in cells}))}; "
                f"model: {', '.join(models)}; seeds: {', '.join(map(str, sorted({c.seed for c in cells})))}; "
                f"{len(cells)} result files.",
                f"Hardware: {'; '.join(sorted({hardware_label(p['hardware']) for p in prov}))}. "
                f"Commits: {', '.join(commits)}. Dates: {dates[0]} to {dates[-1]}." if dates else "Dates: none."]

    def markdown(self) -> str:
        body = tabulate(self.rows, self.headers, tablefmt="pipe", disable_numparse=True,
                        colalign=["left"] * len(self.headers))
        head = [f"### {self.title}", ""] + ([f"**{missing_line(self.missing)}**", ""] if self.missing else [])
        lines = head + [body, ""] + [f"- {n}" for n in self.notes] + [f"- {f}" for f in self.footer()]
        return "\n".join(lines) + "\n"

    def latex(self, preset: str) -> str:
        # Own booktabs writer: tabulate's latex_booktabs escapes "$", so $\pm$ etc. could not be written. The
        # notes and provenance footer are typeset under the table, so they survive into a compiled document.
        def row(cells: list[str]) -> str:
            return " & ".join(tex(c) for c in cells) + r" \\"

        lines = [r"% needs \usepackage{booktabs,graphicx}", r"\begin{table}[htbp]", r"\centering",
                 r"\caption{" + tex(self.title) + "}", r"\label{tab:" + f"{preset}-{self.name}".replace("_", "-") + "}"]
        if self.missing:   # above the table, where a reader sees it before the numbers
            lines += [r"\textbf{" + tex(missing_line(self.missing)) + r"}\par\smallskip"]
        lines += [r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{" + "l" * len(self.headers) + "}", r"\toprule",
                  row(self.headers), r"\midrule", *(row(r) for r in self.rows), r"\bottomrule", r"\end{tabular}}",
                  r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize"]
        lines += [tex(n) + r"\par" for n in self.notes + self.footer()]
        lines += [r"\end{minipage}", r"\end{table}"]
        return "\n".join(lines) + "\n"


def mark_missing(missing: list[Cell], tables: list[Table]) -> list[Table]:
    """Mark every table of a partial preset with the cells its recipe defines that have no result."""
    for tb in tables:
        tb.missing = list(missing)
    return tables

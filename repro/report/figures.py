"""The figures (matplotlib, PNG): Figure 2 (log p histograms of gold, accepted paraphrases and own answers), the
in-domain gain against the paper-four average drop, and the cross-task heatmap. Fixed sizes and DPI, no
timestamps and no "Software" tag, so reruns are byte-identical with the same matplotlib."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evals.stats import aggregate_seeds
from repro.report.formatting import pts
from repro.report.load import Grid
from repro.report.measures import candidate_logps, cell_metric, headline_benches, paper_four_drop, task_headline_metric
from repro.report.tables import SOURCES

DPI = 120


def _plt() -> Any:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    matplotlib.rcdefaults()   # ignore any user matplotlibrc: figures must not depend on the machine's settings
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No "Software" tag (it carries the version) and no bbox="tight" guessing: fixed size and DPI.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    _plt().close(fig)


def fig_logp(g: Grid, path: Path) -> None:
    plt = _plt()
    merged = {t: candidate_logps(g, t) for t in g.tasks}
    tasks = [t for t in g.tasks if merged[t]]
    fig, axes = plt.subplots(max(1, len(tasks)), 2, figsize=(10, 3.2 * max(1, len(tasks))), squeeze=False)
    colors = {"gold": "tab:red", "paraphrase": "tab:orange", "model": "tab:blue"}
    t1 = g.ref["table1_mbpp_example_logp"]
    for i, t in enumerate(tasks):
        # gold of every training example; paraphrases and own answers only where accepted (the paper's Figure 2)
        cands = list(merged[t].values())
        for j, (key, label) in enumerate((("sum", "log p (sum over tokens)"), ("per_token", "log p per token"))):
            ax = axes[i][j]
            vals = {s: np.array([c[s]["logp"][key] for c in cands if s in c and c[s]["accepted"]], dtype=float)
                    for s in SOURCES}
            allv = np.concatenate([v for v in vals.values() if v.size] or [np.zeros(1)])
            edges = np.histogram_bin_edges(allv, bins=20)
            for s in ("gold", "paraphrase", "model"):
                if vals[s].size:   # own answers as an outline, so they stay visible where they overlap others
                    style = ({"histtype": "step", "linewidth": 1.8} if s == "model"
                             else {"histtype": "stepfilled", "alpha": 0.35})
                    ax.hist(vals[s], bins=edges, color=colors[s], **style,
                            label=f"{s} (n={vals[s].size}, median {np.median(vals[s]):.2f})")
            ax.set_title(f"{t}: {label} (accepted candidates)", fontsize=9)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("training examples", fontsize=8)
            ax.legend(fontsize=7)
            if t == "mbpp" and key == "sum":
                ax.text(0.01, 0.97, f"paper Table 1 (one MBPP example): gold {t1['gold']}, own "
                        f"{t1['own_correct_response']}", transform=ax.transAxes, fontsize=6.5, va="top")
    if not tasks:
        axes[0][0].text(0.5, 0.5, "no scored candidates in this preset", ha="center")
    fig.suptitle(f"Figure 2: log p under the base model of gold, accepted paraphrases and judge-accepted own answers "
                 f"({g.preset})", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def fig_gain_vs_drop(g: Grid, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = {m: "osD^vP*X"[i % 8] for i, m in enumerate(g.methods)}
    colors = {t: f"C{i}" for i, t in enumerate(g.tasks)}
    n = 0
    head = headline_benches(g)
    for t, m, cs in g.tuned_rows():
        base = g.base(t)
        hm = task_headline_metric(g, t)
        pts_ = [(cell_metric(c, hm) - cell_metric(base, hm), paper_four_drop(c, base, head)) for c in cs
                if base is not None and c.doc.get("drops") and head and cell_metric(c, hm) is not None]
        if not pts_:
            continue
        gain, drp = aggregate_seeds([100 * p[0] for p in pts_]), aggregate_seeds([100 * p[1] for p in pts_])
        ax.errorbar(drp["mean"], gain["mean"], xerr=drp["std"], yerr=gain["std"], fmt=markers[m], color=colors[t],
                    capsize=3, label=f"{t} / {m}")
        n += 1
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("paper-four average drop, base − tuned (points; > 0 = forgetting)")
    ax.set_ylabel("in-domain gain on the headline metric, tuned − base (points)")
    ax.set_title(f"In-domain gain vs forgetting ({g.preset}; mean ± sd over seeds)", fontsize=10)
    if n:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no generalization drops in this preset", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    _save(fig, path)


def fig_cross_task(g: Grid, labels: list[str], accs: list[list[float | None]], deltas: list[list[float | None]],
                   path: Path) -> None:
    plt = _plt()
    d = np.array([[np.nan if v is None else 100 * v for v in r] for r in deltas], dtype=float)
    lim = max(1.0, float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(g.eval_tasks), 1 + 0.45 * len(labels)))
    im = ax.imshow(d, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i, (ra, rd) in enumerate(zip(accs, deltas)):
        for j, (a, dd) in enumerate(zip(ra, rd)):
            txt = "—" if a is None else f"{pts(a)} ({pts(dd, True) if dd is not None else '—'})"
            dark = dd is not None and abs(100 * dd) > 0.6 * lim   # white text where the colour is dark
            ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(g.eval_tasks)), g.eval_tasks)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("evaluated on")
    ax.set_title(f"Cross-task accuracy % (Δ vs base) — {g.preset}", fontsize=10)
    fig.colorbar(im, ax=ax, label="Δ vs base (points)")
    fig.tight_layout()
    _save(fig, path)



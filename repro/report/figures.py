"""The figures (matplotlib, PNG): Figure 2 (log p histograms of gold, accepted paraphrases and own answers), the
in-domain gain against the paper-four average drop (95% CIs, one colour per method, the paper's points), the
cross-task heatmap on each task's headline metric, and the claims forest plot (the paper's claimed effects against
this suite's estimates). What a figure plots is computed by a function that returns plain data
(``gain_drop_points``, ``claims.claim_rows``), which the regression tests check. Fixed sizes and DPI, no
timestamps and no "Software" tag, so reruns are byte-identical with the same matplotlib."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evals.stats import paired_average_comparison, paired_comparison, seed_means
from repro.report.formatting import pts
from repro.report.load import Grid
from repro.report.measures import (
    BINARY_METRICS,
    BOOT_SEED,
    METRIC_LABEL,
    bench_seed_means,
    candidate_logps,
    headline_benches,
    task_clusters,
    task_headline_metric,
    task_scores,
)
from repro.report.tables import PAPER_DATASET, SOURCES

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


def gain_drop_points(g: Grid) -> list[dict]:
    """What the gain-vs-drop figure plots, one dict per (task, method) with benchmark drops: the in-domain gain
    (tuned − base on the task's headline metric, per item the mean over the method's seeds, paired on items,
    clustered by passage where items share one) and the paper-four average drop (base − tuned, items paired within
    each benchmark), each in points with its 95% bootstrap CI - the statistics of Tables 2 and 4."""
    out = []
    head = headline_benches(g)
    for t, m, cs in g.tuned_rows():
        base = g.base(t)
        withd = [c for c in cs if c.doc.get("drops")]
        if base is None or not withd or not head or not base.doc["generalization"]:
            continue
        hm = task_headline_metric(g, t)
        tuned = seed_means([task_scores(c, t, hm) for c in withd])
        gain = paired_comparison(tuned, task_scores(base, t, hm), clusters=task_clusters(withd + [base], t),
                                 seed=BOOT_SEED, binary_seeds=(len(withd), 1) if hm in BINARY_METRICS else None)
        per = {}
        for b in head:
            sc, seeds = bench_seed_means(withd, b)
            per[b] = (bench_seed_means([base], b)[0], sc, seeds)
        drop = paired_average_comparison(per, seed=BOOT_SEED)
        out.append({"task": t, "method": m, "seeds": len(withd), "metric": hm,
                    "gain": 100 * gain["diff"], "gain_ci": [100 * x for x in gain["ci95"]],
                    "drop": 100 * drop["diff"], "drop_ci": [100 * x for x in drop["ci95"]]})
    return out


def paper_gain_drop(ref: dict, task: str) -> list[dict]:
    """The paper's reference points for a task's panel: SFT's and S3FT's in-domain gain over the base model
    (Table 2; squad: NQ's, a different dataset) at the abstract's average drop (S3FT 2.5; SFT 'up to' 4.4, its
    worst dataset - the paper gives no per-dataset drop)."""
    ds = PAPER_DATASET.get(task)
    if ds is None:
        return []
    t2, ab = ref["table2_in_domain_accuracy"]["values"], ref["abstract_average_drop"]
    return [{"method": m, "gain": round(t2[m][ds] - t2["base"][ds], 1), "drop": ab[m]["value"], "dataset": ds}
            for m in ("sft", "s3ft")]


METHOD_COLORS = {"base": "black", "sft": "tab:blue", "sdft": "tab:green", "s3ft": "tab:red", "ssr": "tab:purple",
                 "self_only": "tab:brown", "sft_matched": "tab:cyan"}
METHOD_MARKERS = {"sft": "o", "sdft": "s", "s3ft": "D", "ssr": "^", "self_only": "v", "sft_matched": "P"}


def _method_style(m: str, i: int) -> tuple[str, str]:
    return METHOD_COLORS.get(m, f"C{i % 10}"), METHOD_MARKERS.get(m, "osD^vPX*"[i % 8])


def fig_gain_vs_drop(g: Grid, path: Path, points: list[dict] | None = None) -> None:
    """One panel per task: each method one colour and marker, labelled, with 95% CI bars on both axes; the
    paper's reference points (hollow) where the paper gives them."""
    plt = _plt()
    points = gain_drop_points(g) if points is None else points
    tasks = [t for t in g.tasks if any(p["task"] == t for p in points)] or ["—"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(8.5, 5.6 * len(tasks)), 6.0), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, t in zip(axes[0], tasks):
        pts_ = [p for p in points if p["task"] == t]
        for p in pts_:
            k = g.methods.index(p["method"])
            color, marker = _method_style(p["method"], k)
            h = ax.errorbar(p["drop"], p["gain"], xerr=[[p["drop"] - p["drop_ci"][0]], [p["drop_ci"][1] - p["drop"]]],
                            yerr=[[p["gain"] - p["gain_ci"][0]], [p["gain_ci"][1] - p["gain"]]], fmt=marker,
                            color=color, ms=7, capsize=3, lw=1.2, alpha=0.9)
            handles.setdefault(f"{p['method']} ({p['seeds']} seed{'s' if p['seeds'] > 1 else ''})", h)
            # a direct label beside each point, offset by method so that neighbours do not print over each other
            ax.annotate(p["method"], (p["drop"], p["gain"]), xytext=((7, 6), (7, -11), (-7, 6), (-7, -11))[k % 4],
                        ha="left" if k % 4 < 2 else "right", textcoords="offset points", fontsize=8, color=color)
        for q in paper_gain_drop(g.ref, t) if pts_ else []:
            color, marker = _method_style(q["method"], 0)
            (h,) = ax.plot(q["drop"], q["gain"], marker, ms=9, mfc="none", mec=color, mew=1.5)
            ax.annotate(f"paper {q['method']}" + (" (NQ)" if t == "squad" else ""), (q["drop"], q["gain"]),
                        xytext=(0, 8), ha="center", textcoords="offset points", fontsize=7.5, color=color)
            handles.setdefault(f"paper {q['method']}: Table 2 gain (squad: NQ), abstract drop", h)
        ax.axhline(0, color="grey", lw=0.6)
        ax.axvline(0, color="grey", lw=0.6)
        metric = METRIC_LABEL.get(pts_[0]["metric"], pts_[0]["metric"]) if pts_ else "headline metric"
        ax.set_xlabel("paper-four average drop, base − tuned (points)\n← less forgetting | more forgetting →",
                      fontsize=8.5)
        ax.set_ylabel(f"in-domain gain, tuned − base (points)\n{metric}; ↑ better", fontsize=8.5)
        ax.set_title(f"{t}" if pts_ else "no generalization drops in this preset", fontsize=10)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3 if len(tasks) == 1 else 4,
                   fontsize=7.5, frameon=False)
    fig.suptitle(f"In-domain gain vs forgetting, {g.preset}\nmean over seeds with 95% CIs; hollow = the paper "
                 f"(Mistral-7B)", fontsize=10)
    fig.tight_layout(rect=(0, 0.13 if handles else 0, 1, 1))
    _save(fig, path)


def fig_claims(rows: list[dict], title: str, path: Path) -> None:
    """The claims forest plot: per claim row its estimate with the 95% CI, the MDE band around zero (grey: effects
    this n cannot tell from 0) and the paper's claimed effect (red diamond); n, p and Holm p at the right. One
    panel per claim (in-domain, average drop), since their signs read differently."""
    plt = _plt()
    kinds = [k for k in ("in-domain", "average drop") if any(r["claim"] == k for r in rows)] or ["in-domain"]
    many = len({r["preset"] for r in rows}) > 1
    heights = [max(1, sum(r["claim"] == k for r in rows)) for k in kinds]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(9.5, 1.7 + 0.62 * sum(heights) + 0.9 * len(kinds)),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    xlabels = {"in-domain": "in-domain S3FT − SFT, headline metric (points)   ← SFT better | S3FT better →",
               "average drop": "paper-four average drop S3FT − SFT (points)   ← S3FT forgets less | more →"}
    for ax, k in zip(axes[:, 0], kinds):
        rs = [r for r in rows if r["claim"] == k]
        ys = list(range(len(rs)))[::-1]
        for y, r in zip(ys, rs):
            if r["mde"] is not None:
                ax.add_patch(plt.Rectangle((-r["mde"], y - 0.32), 2 * r["mde"], 0.64, color="0.85", lw=0,
                                           label="±MDE (80% power)" if y == ys[0] else None))
            ax.errorbar(r["estimate"], y, xerr=[[r["estimate"] - r["ci95"][0]], [r["ci95"][1] - r["estimate"]]],
                        fmt="o", color="black", capsize=4, ms=6, label="this suite: estimate, 95% CI"
                        if y == ys[0] else None)
            if r["paper"] is not None:
                ax.plot(r["paper"], y, "D", color="tab:red", ms=7, mfc="none", mew=1.6,
                        label="paper's claimed effect" if y == ys[0] else None)
            ax.annotate(f"n={_n_short(r)}  p{_eq(r['p'])}  Holm p{_eq(r['p_holm'])}", (1.01, y),
                        xycoords=("axes fraction", "data"), va="center", fontsize=7.5)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(ys, [(f"{r['preset']} / {r['task']}" if many else r["task"])
                           + ("\n(paper: NQ)" if r["task"] == "squad" and r["paper"] is not None and k == "in-domain"
                              else "") for r in rs], fontsize=8.5)
        ax.set_ylim(-0.7, len(rs) - 0.3)
        lo = min([r["ci95"][0] for r in rs] + [r["paper"] for r in rs if r["paper"] is not None]
                 + [-(r["mde"] or 0) for r in rs] + [-1.0])
        hi = max([r["ci95"][1] for r in rs] + [r["paper"] for r in rs if r["paper"] is not None]
                 + [r["mde"] or 0 for r in rs] + [1.0])
        pad = 0.08 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel(xlabels[k], fontsize=8.5)
        ax.set_title(k, fontsize=9, loc="left")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7.5, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 0.8, 1))
    _save(fig, path)


def _eq(p: float) -> str:
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def _n_short(r: dict) -> str:
    return f"{r['n']}" + (f"/{r['n_clusters']}p" if r.get("n_clusters") and r["n_clusters"] < r["n"] else "")


def fig_cross_task(g: Grid, labels: list[str], accs: list[list[float | None]], deltas: list[list[float | None]],
                   path: Path) -> None:
    """The cross-task matrix as a heatmap: colour = Δ vs base, text = score (Δ), on each task's headline metric."""
    plt = _plt()
    d = np.array([[np.nan if v is None else 100 * v for v in r] for r in deltas], dtype=float)
    lim = max(1.0, float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0)
    metrics = [METRIC_LABEL[task_headline_metric(g, e)] for e in g.eval_tasks]
    fig, ax = plt.subplots(figsize=(max(6.5, 3.2 + 2.0 * len(g.eval_tasks)), 1.6 + 0.45 * len(labels)))
    im = ax.imshow(d, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i, (ra, rd) in enumerate(zip(accs, deltas)):
        for j, (a, dd) in enumerate(zip(ra, rd)):
            txt = "—" if a is None else f"{pts(a)} ({pts(dd, True) if dd is not None else '—'})"
            dark = dd is not None and abs(100 * dd) > 0.6 * lim   # white text where the colour is dark
            ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(len(g.eval_tasks)), [f"{e}\n{m}" for e, m in zip(g.eval_tasks, metrics)], fontsize=7.5)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("evaluated on (headline metric)", fontsize=8.5)
    ax.set_ylabel("fine-tuned on / method", fontsize=8.5)
    ax.set_title(f"Cross-task score, % (Δ vs base)\n{g.preset}, each task's headline metric", fontsize=9.5)
    fig.colorbar(im, ax=ax, label="Δ vs base (points; > 0 better)")
    fig.tight_layout()
    _save(fig, path)



#!/usr/bin/env python
"""Regenerate the S3FT paper's tables and figures from result files, beside the paper's published values.

    python paper_tables.py                      # every preset under results/
    python paper_tables.py --preset smoke       # one preset (repeatable)
    python paper_tables.py --results DIR --out DIR

It only reads JSON (result.json + items.jsonl.gz written by ``python -m repro run``) and
results/paper_reference.json: no GPU, no model, no network. Outputs, per preset:
    <out>/tables/<preset>/<table>.md and .tex, MANIFEST.json (sha256 of every output + library versions)
    <out>/figures/<preset>/<figure>.png
and the Markdown of every table is printed. Reruns on the same inputs are byte-identical (fixed bootstrap seeds,
fixed figure sizes/DPI, no timestamps in outputs), which tests/test_regression.py checks.

Units: accuracies, scores and drops are in points (percent). Sign: our drops are tuned - base (negative =
forgetting), as stored in the results; the paper's "average drop" is base - tuned (positive = forgetting), so a
column showing the paper's convention is also given.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent
PAPER_REFERENCE = REPO / "results" / "paper_reference.json"
OUTPUT_DIRS = {"tables", "figures"}   # written by this script under the results dir: never results themselves

# Fixed display orders (paper order first, then anything else alphabetically): determinism and readability.
METHOD_ORDER = ["base", "sft", "sdft", "s3ft", "ssr", "self_only"]
TASK_ORDER = ["gsm8k", "mbpp", "nq_open", "squad"]
BENCH_ORDER = ["mmlu", "mmlu_5shot", "truthfulqa_mc1", "truthfulqa_mc2", "hellaswag", "winogrande"]
# Our task -> the paper's dataset column. squad is not the paper's dataset: it is shown beside "paper: NQ".
PAPER_DATASET = {"gsm8k": "GSM8K", "mbpp": "MBPP", "nq_open": "NQ", "squad": "NQ"}
COMPARISONS = [("s3ft", "sft"), ("s3ft", "sdft"), ("ssr", "sft")]
SOURCES = ["model", "paraphrase", "gold"]
BOOT_SEED = 0   # every bootstrap in the tables uses this seed, so tables are reproducible
DPI = 120


def _order(seq: Iterable[str], first: list[str]) -> list[str]:
    items = set(seq)
    return [x for x in first if x in items] + sorted(items - set(first))


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One result (preset, task, method, seed) and, lazily, its per-item records."""

    path: Path
    doc: dict

    @property
    def task(self) -> str:
        return self.doc["cell"]["task"]

    @property
    def method(self) -> str:
        return self.doc["cell"]["method"]

    @property
    def seed(self) -> int:
        return int(self.doc["cell"]["seed"])

    @property
    def acc(self) -> float:
        return float(self.doc["in_domain"]["acc,none"])

    @property
    def skipped(self) -> bool:
        """Training was skipped (e.g. self_only kept no targets): the row is the base model, flagged in tables."""
        return bool((self.doc.get("training") or {}).get("skipped"))

    @cached_property
    def items(self) -> list[dict]:
        with gzip.open(self.path.parent / self.doc["items"]["path"], "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def task_correct(self, task: str) -> dict[str, bool]:
        return {it["id"]: bool(it["correct"]) for it in self.items if it["kind"] == "task" and it["task"] == task}

    def bench_scores(self, bench: str) -> dict[str, float]:
        """item key -> primary-metric score. The key is ``key`` ("<subject>/<doc_id>" for MMLU, whose doc_ids
        repeat across subjects), falling back to item_key / doc_id for older records."""
        metric = self.doc["generalization"]["primary_metric"][bench].split(",")[0]
        return {str(it.get("key", it.get("item_key", it.get("doc_id")))): float(it[metric])
                for it in self.items if it["kind"] == "benchmark" and it["benchmark"] == bench}

    def candidates(self) -> list[dict]:
        return [it for it in self.items if it["kind"] == "candidates"]


def result_paths(results: Path) -> list[Path]:
    if not results.is_dir():
        return []
    return sorted(p for p in results.rglob("result.json")
                  if not OUTPUT_DIRS & set(p.relative_to(results).parts[:1]))


def load_cells(results: Path, preset: str) -> list["Cell"]:
    cells = [Cell(p, json.loads(p.read_text())) for p in result_paths(results / preset)]
    cells = [c for c in cells if c.doc["cell"]["preset"] == preset]
    tasks, methods = _order({c.task for c in cells}, TASK_ORDER), _order({c.method for c in cells}, METHOD_ORDER)
    return sorted(cells, key=lambda c: (tasks.index(c.task), methods.index(c.method), c.seed))


def find_presets(results: Path) -> list[str]:
    return sorted({json.loads(p.read_text())["cell"]["preset"] for p in result_paths(results)})


class Grid:
    """The cells of one preset, indexed the ways the tables need."""

    def __init__(self, preset: str, cells: list[Cell], ref: dict) -> None:
        self.preset, self.cells, self.ref = preset, cells, ref
        self.tasks = _order({c.task for c in cells}, TASK_ORDER)
        self.methods = _order({c.method for c in cells}, METHOD_ORDER)
        self.eval_tasks = _order({t for c in cells for t in c.doc["cross_task"]}, TASK_ORDER)
        self.benches = _order({b for c in cells for b in (c.doc["generalization"] or {}).get("primary_metric", {})},
                              BENCH_ORDER)

    def group(self, task: str, method: str) -> list[Cell]:
        return [c for c in self.cells if c.task == task and c.method == method]

    def base(self, task: str) -> Cell | None:
        """The base cell of a task (one deterministic run); any base cell if that task has none."""
        own = self.group(task, "base")
        anyb = [c for c in self.cells if c.method == "base"]
        return (own or anyb or [None])[0]

    def tuned_rows(self) -> list[tuple[str, str, list[Cell]]]:
        return [(t, m, self.group(t, m)) for t in self.tasks for m in self.methods
                if m != "base" and self.group(t, m)]


# ----------------------------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------------------------
def pts(x: float | None, sign: bool = False) -> str:
    """A fraction as points with one decimal; never prints "-0.0"."""
    if x is None:
        return "—"
    v = round(100.0 * x, 1) + 0.0
    return f"{v:+.1f}" if sign else f"{v:.1f}"


def mean_sd(values: list[float], sign: bool = False, scale_pts: bool = True) -> str:
    """mean ± sd over seeds (sd omitted for one seed: it would be 0 and mean nothing). scale_pts=False prints raw
    values (nats) with 4 significant digits instead of points."""
    from evals.stats import aggregate_seeds  # noqa: PLC0415

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


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def ci_txt(ci: list[float] | None) -> str:
    return f"[{pts(ci[0], True)}, {pts(ci[1], True)}]" if ci else ""


def p_txt(p: float | None) -> str:
    return "—" if p is None else (f"{p:.3f}" if p >= 0.001 else "<0.001")


@dataclass
class Table:
    name: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)

    def footer(self) -> list[str]:
        """Where the numbers came from: preset, model, seeds, hardware, commits, dates (never "now": reruns must
        be byte-identical)."""
        from repro.provenance import hardware_label  # noqa: PLC0415

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
        from tabulate import tabulate  # noqa: PLC0415

        body = tabulate(self.rows, self.headers, tablefmt="pipe", disable_numparse=True,
                        colalign=["left"] * len(self.headers))
        lines = [f"### {self.title}", "", body, ""] + [f"- {n}" for n in self.notes] + [f"- {f}" for f in self.footer()]
        return "\n".join(lines) + "\n"

    def latex(self, preset: str) -> str:
        # Own booktabs writer: tabulate's latex_booktabs escapes "$", so $\pm$ etc. could not be written. The
        # notes and provenance footer are typeset under the table, so they survive into a compiled document.
        def row(cells: list[str]) -> str:
            return " & ".join(tex(c) for c in cells) + r" \\"

        lines = [r"% needs \usepackage{booktabs,graphicx}", r"\begin{table}[htbp]", r"\centering",
                 r"\caption{" + tex(self.title) + "}", r"\label{tab:" + f"{preset}-{self.name}".replace("_", "-") + "}",
                 r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{" + "l" * len(self.headers) + "}", r"\toprule",
                 row(self.headers), r"\midrule", *(row(r) for r in self.rows), r"\bottomrule", r"\end{tabular}}",
                 r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize"]
        lines += [tex(n) + r"\par" for n in self.notes + self.footer()]
        lines += [r"\end{minipage}", r"\end{table}"]
        return "\n".join(lines) + "\n"


def tex(s: str) -> str:
    out = "".join("\\" + ch if ch in "&%$#_{}" else {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}",
                                                      "^": r"\textasciicircum{}"}.get(ch, ch) for ch in s)
    for u, t in (("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("≤", r"$\le$"), ("×", r"$\times$"), ("†", r"\dag{}"),
                 ("—", "---"), ("−", "-"), ("‖", r"$\|$"), ("→", r"$\to$")):
        out = out.replace(u, t)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------
def paper_col(task: str) -> str:
    ds = PAPER_DATASET.get(task)
    if ds is None:
        return f"{task} paper"
    return f"{task} paper: NQ" if task == "squad" else f"{task} paper ({ds})"


def table2(g: Grid) -> Table:
    ref = g.ref["table2_in_domain_accuracy"]["values"]
    headers = ["method"] + [h for t in g.tasks for h in (f"{t} ours", paper_col(t))]
    rows, used = [], []
    for m in g.methods:
        row = [m]
        for t in g.tasks:
            cs = g.group(t, m)
            used += cs
            if not cs:
                row.append("—")
            else:
                n = "/".join(sorted({str(c.doc["in_domain"]["n"]) for c in cs}))
                runs = "1 run" if m == "base" else f"{len(cs)} seed{'s' if len(cs) > 1 else ''}"
                mark = "†" if any(c.skipped for c in cs) else ""
                row.append(f"{mean_sd([c.acc for c in cs])}{mark} ({runs}, n={n})")
            paper = ref.get(m, {}).get(PAPER_DATASET.get(t, ""))
            row.append("— (not in paper)" if paper is None else f"{paper:.1f}")
        rows.append(row)
    notes = ["In-domain accuracy (%): each model fine-tuned on one task and tested on that task's test subset. "
             "Ours: mean ± sd over training seeds (base: one deterministic run); n = test items.",
             "Paper values: Table 2 [V] (Mistral-7B-Instruct-v0.2). The paper's reading column is NQ (= our nq_open); "
             "beside squad it is shown as 'paper: NQ' for orientation only (a different dataset)."]
    if any(c.skipped for c in used):
        notes.append("† training skipped (the method kept no training targets): the row is the untrained base model.")
    return Table("table2_in_domain", "Table 2: in-domain accuracy", headers, rows, used, notes)


def table3(g: Grid) -> Table:
    ref = g.ref["table3_s3ft_target_sources"]["values"]
    headers = ["task", "method", "seeds", "model %", "paraphrase %", "gold %", "kept targets",
               "paper S3FT (model / paraphrase / gold %)"]
    order = _order({m for m in g.methods if m != "base"}, ["s3ft", "ssr", "sdft", "self_only", "sft"])
    rows, used = [], []
    for t in g.tasks:
        for m in order:
            cs = [c for c in g.group(t, m) if c.doc.get("targets")]
            if not cs:
                continue
            used += cs
            tg = [c.doc["targets"] for c in cs]
            shares = [mean_sd([x["sources"][s]["share"] for x in tg]) for s in SOURCES]
            kept = (f"{mean([x['n_targets'] for x in tg]):g}/{mean([x['n_examples'] for x in tg]):g} "
                    f"({pts(mean([1.0 - x['dropped_share'] for x in tg]))}%)")
            ds = PAPER_DATASET.get(t)
            paper = "—"
            if m == "s3ft" and ds in ref:
                paper = " / ".join(f"{ref[ds][s]:.1f}" for s in SOURCES) + (" (paper: NQ)" if t == "squad" else "")
            rows.append([t, m, str(len(cs)), *shares, kept, paper])
    notes = ["Share of training targets (%) by source: the model's own judged-correct answer, the base model's "
             "judged-correct paraphrase of the gold answer, or the gold answer itself. Mean ± sd over seeds.",
             "kept targets = training targets / training examples: below 100% only for methods that drop "
             "examples (self_only keeps only correct own answers; that shrinkage is shown here).",
             "Paper: Table 3 [V], S3FT only (the paper's NQ shares sum to 99.7 as published)."]
    return Table("table3_targets", "Table 3: sources of the training targets", headers, rows, used, notes)


def pooled_bench(base: Cell, tuned: list[Cell], bench: str) -> tuple[list[float], list[float]]:
    """Base and tuned per-item scores on the items both were scored on, pooled over seeds (base repeated per
    seed) so a paired bootstrap over (seed, item) pairs is possible."""
    b = base.bench_scores(bench)
    bi, ti = [], []
    for c in tuned:
        t = c.bench_scores(bench)
        keys = sorted(set(b) & set(t))
        bi += [b[k] for k in keys]
        ti += [t[k] for k in keys]
    return bi, ti


def table4(g: Grid) -> Table:
    from evals.stats import drop_with_uncertainty  # noqa: PLC0415

    ab = g.ref["abstract_average_drop"]
    pmap = {ours: paper for paper, ours_l in g.ref["table4_generalization"]["benchmark_map"].items() for ours in ours_l}
    headers = ["fine-tuned on", "method", *g.benches, "avg drop, ours (tuned − base)",
               "avg drop, paper sign (base − tuned)", "paper avg drop (abstract)"]
    base_cells = [c for c in g.cells if c.method == "base" and c.doc["generalization"]]
    # Every task's base cell scores the same base model on the same items; the first one is the base row.
    base_differs = len({json.dumps(c.doc["generalization"]["results"], sort_keys=True) for c in base_cells}) > 1
    rows, used = [], list(base_cells[:1])
    if base_cells:
        res = base_cells[0].doc["generalization"]
        rows.append(["—", "base"] + [pts(res["results"][b][res["primary_metric"][b]]) if b in res["results"]
                                     else "—" for b in g.benches] + ["0 (reference)", "0 (reference)", "n/r"])
    paper_avg = {"sft": f"up to {ab['sft']['value']}", "s3ft": f"{ab['s3ft']['value']}", "sdft": "n/r"}
    for t, m, cs in g.tuned_rows():
        withd = [c for c in cs if c.doc.get("drops")]
        used += cs
        row = [t, m]
        base = g.base(t)
        for b in g.benches:
            per = [c.doc["drops"]["per_benchmark"][b] for c in withd if b in c.doc["drops"]["per_benchmark"]]
            if not per:
                row.append("skipped†" if any(c.skipped for c in cs) else "—")
                continue
            if len(per) == 1:
                ci = per[0]["ci95"]
            else:   # several seeds: paired bootstrap over (seed, item) pairs of the pooled items
                bi, ti = pooled_bench(base, withd, b)
                ci = drop_with_uncertainty(bi, ti, seed=BOOT_SEED)["ci95"]
            row.append(f"{pts(mean([p['tuned'] for p in per]))} (Δ {pts(mean([p['drop'] for p in per]), True)} "
                       f"{ci_txt(ci)})")
        avg = [c.doc["drops"]["average_drop"]["average_drop"] for c in withd if c.doc["drops"].get("average_drop")]
        row += [mean_sd(avg, sign=True) if avg else ("skipped†" if any(c.skipped for c in cs) else "—"),
                mean_sd([-a for a in avg], sign=True) if avg else "—", paper_avg.get(m, "— (not in paper)")]
        rows.append(row)
    rows.append(["paper Table 4", "all rows"] + ["n/r" if b in pmap else "— (not in paper)" for b in g.benches]
                + ["n/r", "n/r", "SFT up to 4.4, S3FT 2.5"])
    metrics = {b: m for c in g.cells for b, m in ((c.doc["generalization"] or {}).get("primary_metric") or {}).items()}
    notes = ["Scores (%) on each benchmark's primary metric ("
             + ", ".join(f"{b}: {metrics[b].split(',')[0]}" for b in g.benches)
             + "); per cell: tuned score (Δ = tuned − base [95% CI]). Δ < 0 means forgetting.",
             "CI: the stored paired-bootstrap CI for one seed; for several seeds, a paired bootstrap over pooled "
             f"(seed, item) pairs (seed {BOOT_SEED}). Scores and Δ are means over seeds.",
             "Average drop = unweighted mean over benchmarks of (tuned − base), then mean ± sd over seeds. "
             "The paper "
             "reports it as a positive number (base − tuned): the 'paper sign' column flips ours for comparison with "
             "the abstract's SFT 'up to 4.4' (worst fine-tuning dataset [I]) and S3FT 2.5 [V].",
             "Paper Table 4 cell values are not available to us (n/r = not reported); its benchmarks are "
             "MMLU, TruthfulQA, HellaSwag, Winogrande"
             + ("; ours map as " + ", ".join(f"{b}→{pmap[b]}" for b in g.benches if b in pmap)
                if any(b in pmap for b in g.benches) else "")
             + "."]
    if any(c.skipped for c in used):
        notes.append("† training skipped (no training targets): no drops were computed for that row.")
    if base_differs:
        notes.append(f"WARNING: the base cells disagree on benchmark scores; the base row is {base_cells[0].task}'s "
                     "and each row's Δ is against its own task's base run.")
    return Table("table4_generalization", "Table 4: generalization (forgetting) on held-out benchmarks",
                 headers, rows, used, notes)


def table_comparisons(g: Grid) -> Table:
    from evals.stats import compare_average_drops, mcnemar, paired_bootstrap  # noqa: PLC0415

    headers = ["task", "A vs B", "paired seeds", "acc A", "acc B", "Δacc A−B [95% CI]", "McNemar n01/n10, p",
               "avg drop A", "avg drop B", "A−B [95% CI]", "p", "forgets less?"]
    rows, used = [], []
    for t in g.tasks:
        for a, b in COMPARISONS:
            ca = {c.seed: c for c in g.group(t, a)}
            cb = {c.seed: c for c in g.group(t, b)}
            seeds = sorted(set(ca) & set(cb))
            if not seeds:
                continue
            used += [ca[s] for s in seeds] + [cb[s] for s in seeds]
            xa, xb = [], []
            for s in seeds:   # pair items within the same seed, then pool the pairs over seeds
                ia, ib = ca[s].task_correct(t), cb[s].task_correct(t)
                keys = sorted(set(ia) & set(ib))
                xa += [ia[k] for k in keys]
                xb += [ib[k] for k in keys]
            pb = paired_bootstrap([float(v) for v in xa], [float(v) for v in xb], seed=BOOT_SEED)
            mc = mcnemar(xa, xb)
            row = [t, f"{a} vs {b}", ",".join(map(str, seeds)), pts(mean([float(v) for v in xa])),
                   pts(mean([float(v) for v in xb])), f"{pts(pb['diff'], True)} {ci_txt(pb['ci95'])}",
                   f"{mc['n01']}/{mc['n10']}, {p_txt(mc['p_value'])}"]
            base = g.base(t)
            benches = [bn for bn in g.benches if base is not None and base.doc["generalization"]
                       and all(ca[s].doc["drops"] and cb[s].doc["drops"] for s in seeds)]
            if base is not None and benches:
                used.append(base)
                A, B, Z = {}, {}, {}
                for bn in benches:
                    bsc = base.bench_scores(bn)
                    A[bn], B[bn], Z[bn] = [], [], []
                    for s in seeds:
                        sa, sb = ca[s].bench_scores(bn), cb[s].bench_scores(bn)
                        keys = sorted(set(bsc) & set(sa) & set(sb))
                        A[bn] += [sa[k] for k in keys]
                        B[bn] += [sb[k] for k in keys]
                        Z[bn] += [bsc[k] for k in keys]
                cmp = compare_average_drops(A, B, Z, seed=BOOT_SEED)
                sig = cmp["p_value"] < 0.05
                verdict = ((f"{a} forgets less" if cmp["diff"] > 0 else f"{a} forgets more") if sig
                           else "no sig. difference")
                row += [pts(cmp["average_drop_a"], True), pts(cmp["average_drop_b"], True),
                        f"{pts(cmp['diff'], True)} {ci_txt(cmp['ci95'])}", p_txt(cmp["p_value"]), verdict]
            else:
                row += ["—"] * 4 + ["no benchmark drops (training skipped or no benchmarks)"]
            rows.append(row)
    notes = ["In-domain: items paired within each seed, pairs pooled over the seeds both methods have; Δacc CI from "
             f"a paired bootstrap (seed {BOOT_SEED}); McNemar on the same pairs (n01 = A wrong & B right, "
             "n10 = A right & B wrong; exact test below 25 discordant pairs).",
             "Forgetting: evals.stats.compare_average_drops on the benchmark items (same pooling; base items repeated "
             "per seed). Avg drops are tuned − base, so A−B > 0 means A forgets less; 'forgets less?' needs "
             "p < 0.05."]
    return Table("comparisons", "Paired comparisons: in-domain accuracy and forgetting", headers, rows, used, notes)


def table_cross_task(g: Grid) -> tuple[Table, list[str], list[list[float | None]], list[list[float | None]]]:
    """The cross-task matrix; also returns the row labels, accuracies and deltas for the heatmap."""
    base_acc: dict[str, float | None] = {}
    used = []
    for e in g.eval_tasks:
        b = g.base(e) if g.group(e, "base") else next((c for c in g.cells if c.method == "base"
                                                        and e in c.doc["cross_task"]), None)
        base_acc[e] = None if b is None else float(b.doc["cross_task"][e]["acc,none"])
        used += [b] if b is not None else []
    labels, accs, deltas = ["base"], [[base_acc[e] for e in g.eval_tasks]], [[0.0 if base_acc[e] is not None else None
                                                                             for e in g.eval_tasks]]
    rows = [["—", "base"] + [pts(base_acc[e]) for e in g.eval_tasks]]
    for t, m, cs in g.tuned_rows():
        used += cs
        row, ra, rd = [t, m], [], []
        for e in g.eval_tasks:
            vals = [float(c.doc["cross_task"][e]["acc,none"]) for c in cs if e in c.doc["cross_task"]]
            a = mean(vals)
            d = None if a is None or base_acc[e] is None else a - base_acc[e]
            ra.append(a)
            rd.append(d)
            row.append("—" if a is None else f"{pts(a)} ({pts(d, True) if d is not None else '—'})"
                       + ("*" if e == t else "") + ("†" if any(c.skipped for c in cs) else ""))
        rows.append(row)
        labels.append(f"{t} / {m}" + ("†" if any(c.skipped for c in cs) else ""))
        accs.append(ra)
        deltas.append(rd)
    notes = ["Accuracy (%) of each model on every task's test subset, mean over seeds, with (Δ vs base) in points. "
             "* = in-domain (the task the model was fine-tuned on). † = training skipped (no targets): base model."]
    table = Table("cross_task", "Cross-task matrix: fine-tuned on (rows) x evaluated on (columns)",
                  ["fine-tuned on", "method"] + g.eval_tasks, rows, used, notes)
    return table, labels, accs, deltas


def table_forgetting(g: Grid) -> Table:
    headers = ["task", "method", "seeds", "KL(base‖tuned) / token", "gold NLL tuned / token", "gold NLL base / token",
               "Δ gold NLL", "prompts", "KL tokens"]
    rows, used = [], []
    for t, m, cs in g.tuned_rows():
        fs = [c.doc["forgetting_signal"] for c in cs if c.doc.get("forgetting_signal")]
        if not fs:
            continue
        used += cs
        raw = lambda k: mean_sd([f[k] for f in fs], scale_pts=False)   # noqa: E731  (nats, not points)
        rows.append([t, m, str(len(fs)), raw("kl_base_tuned_per_token"), raw("nll_gold_tuned_per_token"),
                     raw("nll_gold_base_per_token"),
                     mean_sd([f["nll_gold_tuned_per_token"] - f["nll_gold_base_per_token"] for f in fs], sign=True,
                             scale_pts=False),
                     str(fs[0]["n_prompts"]), str(fs[0]["n_kl_tokens"])])
    notes = ["Forgetting signal (nats per token, mean ± sd over seeds) on held-out test prompts: KL(base‖tuned) of "
             "the next-token distributions, and the negative log-likelihood of the gold answers under the tuned and "
             "base model. Rows with skipped training have no signal and are left out."]
    return Table("forgetting_signal", "Forgetting signal: KL(base‖tuned) and gold NLL", headers, rows, used, notes)


COST_STAGES = [("predict", ["targets_predict"]), ("judge", ["targets_judge"]), ("paraphrase", ["targets_paraphrase"]),
               ("score", ["targets_score"]), ("targets total", ["targets"]), ("train", ["train"]),
               ("eval tasks", ["eval_tasks"]), ("eval benchmarks", ["eval_general", "eval_general_base"]),
               ("forgetting", ["forgetting"]), ("total", ["total"])]


def table_cost(g: Grid) -> Table:
    headers = ["task", "method", "seeds"] + [f"{s} (s)" for s, _ in COST_STAGES] + ["total / SFT total"]
    rows, used = [], []
    for t in g.tasks:
        totals = {m: mean([c.doc["provenance"]["wall_time_s"].get("total", 0.0) for c in g.group(t, m)])
                  for m in g.methods if g.group(t, m)}
        for m in g.methods:
            cs = g.group(t, m)
            if not cs:
                continue
            used += cs
            walls = [c.doc["provenance"]["wall_time_s"] for c in cs]
            row = [t, m, str(len(cs))]
            for _, keys in COST_STAGES:
                vals = [sum(w[k] for k in keys if k in w) for w in walls if any(k in w for k in keys)]
                row.append(f"{mean(vals):.1f}" if vals else "—")
            sft = totals.get("sft")
            row.append(f"{totals[m] / sft:.2f}×" if sft and m != "base" else "—")
            rows.append(row)
    notes = ["Wall time (s) per stage from provenance.wall_time_s, mean over seeds; targets = predict, judge, "
             "paraphrase, score on the training set; eval benchmarks includes the base model's benchmark run "
             "when a cell did it.",
             "Generations are cached and shared across cells (and a later seed may reuse earlier targets), so a "
             "stage served from the cache shows ~0 s (the cell that ran first pays for it): compare methods on a "
             "grid run with a cold cache. The S3FT/SFT ratio is the 'total / SFT total' of the s3ft row."]
    return Table("cost", "Cost: wall time per stage", headers, rows, used, notes)


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------
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
    import numpy as np  # noqa: PLC0415

    plt = _plt()
    tasks = [t for t in g.tasks if any(c.candidates() for c in g.group(t, "s3ft"))]
    fig, axes = plt.subplots(max(1, len(tasks)), 2, figsize=(10, 3.2 * max(1, len(tasks))), squeeze=False)
    colors = {"gold": "tab:red", "paraphrase": "tab:orange", "model": "tab:blue"}
    t1 = g.ref["table1_mbpp_example_logp"]
    for i, t in enumerate(tasks):
        cell = g.group(t, "s3ft")[0]   # lowest seed: later seeds reuse the same targets, pooling would double-count
        cands = cell.candidates()
        for j, (key, label) in enumerate((("sum", "log p (sum over tokens)"), ("per_token", "log p per token"))):
            ax = axes[i][j]
            vals = {s: np.array([c["logp"][s][key] for c in cands if s in c["logp"]], dtype=float) for s in SOURCES}
            allv = np.concatenate([v for v in vals.values() if v.size] or [np.zeros(1)])
            edges = np.histogram_bin_edges(allv, bins=20)
            for s in ("gold", "paraphrase", "model"):
                if vals[s].size:   # own answers as an outline, so they stay visible where they overlap others
                    style = ({"histtype": "step", "linewidth": 1.8} if s == "model"
                             else {"histtype": "stepfilled", "alpha": 0.35})
                    ax.hist(vals[s], bins=edges, color=colors[s], **style,
                            label=f"{s} (n={vals[s].size}, median {np.median(vals[s]):.2f})")
            ax.set_title(f"{t} (seed {cell.seed}): {label}", fontsize=9)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("training examples", fontsize=8)
            ax.legend(fontsize=7)
            if t == "mbpp" and key == "sum":
                ax.text(0.01, 0.97, f"paper Table 1 (one MBPP example): gold {t1['gold']}, own "
                        f"{t1['own_correct_response']}", transform=ax.transAxes, fontsize=6.5, va="top")
    if not tasks:
        axes[0][0].text(0.5, 0.5, "no s3ft candidates in this preset", ha="center")
    fig.suptitle(f"Figure 2: log p of gold / paraphrase / own answers under the base model ({g.preset})", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def fig_gain_vs_drop(g: Grid, path: Path) -> None:
    from evals.stats import aggregate_seeds  # noqa: PLC0415

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = {m: "osD^vP*X"[i % 8] for i, m in enumerate(g.methods)}
    colors = {t: f"C{i}" for i, t in enumerate(g.tasks)}
    n = 0
    for t, m, cs in g.tuned_rows():
        base = g.base(t)
        pts_ = [(c.acc - base.acc, c.doc["drops"]["average_drop"]["average_drop"]) for c in cs
                if base is not None and c.doc.get("drops") and c.doc["drops"].get("average_drop")]
        if not pts_:
            continue
        gain, drp = aggregate_seeds([100 * p[0] for p in pts_]), aggregate_seeds([100 * p[1] for p in pts_])
        ax.errorbar(drp["mean"], gain["mean"], xerr=drp["std"], yerr=gain["std"], fmt=markers[m], color=colors[t],
                    capsize=3, label=f"{t} / {m}")
        n += 1
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("average benchmark drop, tuned − base (points; < 0 = forgetting)")
    ax.set_ylabel("in-domain gain, tuned − base (points)")
    ax.set_title(f"In-domain gain vs forgetting ({g.preset}; mean ± sd over seeds)", fontsize=10)
    if n:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no generalization drops in this preset", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    _save(fig, path)


def fig_cross_task(g: Grid, labels: list[str], accs: list[list[float | None]], deltas: list[list[float | None]],
                   path: Path) -> None:
    import numpy as np  # noqa: PLC0415

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


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_preset(preset: str, cells: list[Cell], ref: dict, out: Path,
                  echo: Callable[[str], None] = print) -> list[Path]:
    """Write every table and figure of one preset under `out`; returns the files written (manifest last)."""
    import matplotlib  # noqa: PLC0415
    import tabulate  # noqa: PLC0415

    g = Grid(preset, cells, ref)
    tdir, fdir = out / "tables" / preset, out / "figures" / preset
    tdir.mkdir(parents=True, exist_ok=True)
    cross, labels, accs, deltas = table_cross_task(g)
    tables = [table2(g), table3(g), table4(g), table_comparisons(g), cross, table_forgetting(g), table_cost(g)]
    written = []
    for tb in tables:
        md = tb.markdown()
        echo(md)
        for ext, text in (("md", md), ("tex", tb.latex(preset))):
            p = tdir / f"{tb.name}.{ext}"
            p.write_text(text, encoding="utf-8")
            written.append(p)
    for name, draw in (("fig2_logp_hist", lambda p: fig_logp(g, p)),
                       ("gain_vs_drop", lambda p: fig_gain_vs_drop(g, p)),
                       ("cross_task_heatmap", lambda p: fig_cross_task(g, labels, accs, deltas, p))):
        draw(fdir / f"{name}.png")
        written.append(fdir / f"{name}.png")
    manifest = {"preset": preset, "matplotlib": matplotlib.__version__, "tabulate": tabulate.__version__,
                "files": {p.relative_to(out).as_posix(): sha256(p) for p in sorted(written)}}
    mpath = tdir / "MANIFEST.json"
    mpath.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return written + [mpath]


def run_summary(results: Path, preset: str) -> str:
    """What a finished `python -m repro run` prints: the in-domain accuracy, the generalization drops and the
    paired comparisons of `preset` under `results`, as Markdown (the same tables this script writes); '' when the
    preset has no results there."""
    cells = load_cells(results, preset)
    if not cells:
        return ""
    g = Grid(preset, cells, json.loads(PAPER_REFERENCE.read_text()))
    return "\n\n".join(tb.markdown() for tb in (table2(g), table4(g), table_comparisons(g)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Regenerate the S3FT paper's tables (Markdown + LaTeX) and figures (PNG) from result files, "
                    "beside the paper's published values (results/paper_reference.json). Reads JSON only.",
        epilog="Outputs: <out>/tables/<preset>/*.md, *.tex, MANIFEST.json and <out>/figures/<preset>/*.png. "
               "Tables: Table 2 (in-domain accuracy), Table 3 (target sources), Table 4 (generalization drops), "
               "paired comparisons, cross-task matrix, forgetting signal, cost. Figures: Figure 2 (log p "
               "histograms), in-domain gain vs average drop, cross-task heatmap.")
    ap.add_argument("--results", type=Path, default=REPO / "results",
                    help="results root holding <preset>/<task>/<method>/seed<k>/result.json (default: results/ "
                         "beside this script)")
    ap.add_argument("--preset", action="append", default=None,
                    help="preset to render (repeatable; default: every preset found under --results)")
    ap.add_argument("--out", type=Path, default=None, help="output root (default: the --results dir)")
    args = ap.parse_args(argv)
    out = args.out if args.out is not None else args.results
    ref = json.loads(PAPER_REFERENCE.read_text())
    presets = args.preset or find_presets(args.results)
    if not presets:
        print(f"no results under {args.results}; run python -m repro run --preset NAME")
        return 0
    for preset in presets:
        cells = load_cells(args.results, preset)
        if not cells:
            print(f"no results for preset {preset} under {args.results}; run python -m repro run --preset {preset}")
            continue
        files = render_preset(preset, cells, ref, out)
        print(f"wrote {len(files)} files under {out / 'tables' / preset} and {out / 'figures' / preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

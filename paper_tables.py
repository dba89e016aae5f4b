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

Units: accuracies, scores and drops are in points (percent). Sign: the tables show drops in the PAPER'S sign,
base - tuned (positive = forgetting); result files store tuned - base. The headline average drop is the paper's:
the mean over MMLU, TruthfulQA (mc2), HellaSwag and WinoGrande; every other benchmark goes into a separately
named extended average.

Statistics (evals.stats): seeds are replicates, items the sampling unit. Each method's per-item score is the mean
over its seeds; methods are compared paired on the same items with exact McNemar, sign-flip permutation or a
cluster (passage) permutation/bootstrap, and every comparison shows n, effect [95% CI], p and the minimum
detectable effect. ``run_summary(results_dir, preset)`` gives what a finished run prints.
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
T1_COLUMNS = ["gold", "paraphrase", "model"]   # Table 1's column order: the reference first, the model's own last
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

    def bench_field(self, bench: str, field_: str) -> dict[str, float]:
        """item key -> another per-item field of a benchmark (e.g. logp_correct)."""
        return {str(it["key"]): float(it[field_]) for it in self.items
                if it["kind"] == "benchmark" and it["benchmark"] == bench}

    def has_bench_field(self, bench: str, field_: str) -> bool:
        recs = [it for it in self.items if it["kind"] == "benchmark" and it["benchmark"] == bench]
        return bool(recs) and all(it.get(field_) is not None for it in recs)

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
        from repro.runtime.provenance import hardware_label  # noqa: PLC0415

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
def _words(vals: list[float]) -> str:
    from evals.stats import aggregate_seeds  # noqa: PLC0415

    agg = aggregate_seeds(vals)
    return f"{agg['mean']:.1f}" + (f" ± {agg['std']:.1f}" if agg["n"] > 1 else "")


def _judge(g: "Grid", task: str) -> str:
    kinds = {c.doc["cross_task"][task]["task"].get("judge", "") for c in g.cells if task in c.doc["cross_task"]}
    return kinds.pop() if len(kinds) == 1 else ""


def _metric(cell: Cell, metric: str) -> float | None:
    """A cell's in-domain value of a metric: the judge's accuracy, or a reading metric (None if not recorded)."""
    if metric == "acc":
        return cell.acc
    reading = cell.doc["in_domain"].get("reading") or cell.doc["cross_task"][cell.task].get("reading") or {}
    return reading.get(metric)


def paper_col(task: str) -> str:
    ds = PAPER_DATASET.get(task)
    if ds is None:
        return f"{task} paper"
    return f"{task} paper: NQ" if task == "squad" else f"{task} paper ({ds})"


READING_EXTRA = [("em", "EM"), ("f1", "F1"), ("containment", "containment"), ("acc", "judge acc")]


def table2(g: Grid) -> Table:
    ref = g.ref["table2_in_domain_accuracy"]["values"]
    heads = {t: headline_metric(g, t) for t in g.tasks}
    reading = {t: any((c.doc["in_domain"].get("reading") or c.doc["cross_task"].get(t, {}).get("reading"))
                      for c in g.cells if c.task == t) for t in g.tasks}
    extra = {t: [(k, lab) for k, lab in READING_EXTRA if k != heads[t] and not (k == "acc" and
                                                                                 _judge(g, t) == "match")]
             + [("answer_words", "answer words")] if reading[t] else [] for t in g.tasks}
    headers = ["method"]
    for t in g.tasks:
        headers += [f"{t} ours: {METRIC_LABEL[heads[t]]}"] + [f"{t} {lab}" for _, lab in extra[t]] + [paper_col(t)]
    rows, used = [], []
    for m in g.methods:
        row = [m]
        for t in g.tasks:
            cs = g.group(t, m)
            used += cs
            if not cs:
                row += ["—"] * (1 + len(extra[t]))
            else:
                n = "/".join(sorted({str(c.doc["in_domain"]["n"]) for c in cs}))
                runs = "1 run" if m == "base" else f"{len(cs)} seed{'s' if len(cs) > 1 else ''}"
                mark = "†" if any(c.skipped for c in cs) else ""
                row.append(f"{mean_sd([_metric(c, heads[t]) for c in cs])}{mark} ({runs}, n={n})")
                for k, _ in extra[t]:
                    vals = [_metric(c, k) for c in cs]
                    row.append("—" if None in vals else (_words(vals) if k == "answer_words" else mean_sd(vals)))
            paper = ref.get(m, {}).get(PAPER_DATASET.get(t, ""))
            row.append("— (not in paper)" if paper is None else f"{paper:.1f}")
        rows.append(row)
    notes = ["In-domain score (%): each model fine-tuned on one task and tested on that task's test subset, on the "
             "task's headline metric (the recipe's tasks.<task>.headline_metric). Ours: mean ± sd over training seeds "
             "(base: one deterministic run); n = test items.",
             "Reading tasks (squad, nq_open): the headline is the official SQuAD v1.1 F1 (normalised answers, token "
             "F1, max over gold answers) where the recipe says f1; EM is the official exact match; containment "
             "(a gold alias appears in the answer, the suite's lenient judge) rewards long answers, so the mean "
             "answer length in words is shown beside it. Paired tests on these are in comparisons.md.",
             "Paper values: Table 2 [V] (Mistral-7B-Instruct-v0.2). The paper's reading column is NQ (= our nq_open); "
             "beside squad it is shown as 'paper: NQ' for orientation only (a different dataset)."]
    if any(c.skipped for c in used):
        notes.append("† training skipped (the method kept no training targets): the row is the untrained base model.")
    return Table("table2_in_domain", "Table 2: in-domain score (headline metric per task)", headers, rows, used, notes)


def candidate_logps(g: Grid, task: str) -> dict[str, dict[str, dict]]:
    """id -> source -> {"logp": {...}, "accepted": bool} for one task's training examples, merged over the
    methods' cells of the lowest seed (candidates come from one shared cache, so a source's text, verdict and log p
    are the same in every method that has it: S3FT paraphrases only where its own answer failed, SDFT everywhere)."""
    merged: dict[str, dict[str, dict]] = {}
    for m in g.methods:
        cells = g.group(task, m)
        if not cells:
            continue
        for it in cells[0].candidates():
            for s, lp in it.get("logp", {}).items():
                merged.setdefault(it["id"], {}).setdefault(
                    s, {"logp": lp, "accepted": bool(it.get("accepted", {}).get(s, s == "gold"))})
    return merged


def _med(xs: list[float]) -> str:
    import statistics  # noqa: PLC0415

    return f"{statistics.median(xs):.2f}" if xs else "—"


def table1(g: Grid) -> Table:
    """Table 1 / Figure 2 as the paper means them: on the same training examples, log p under the base model of the
    gold answer, the accepted paraphrase and the judge-accepted own answer; plus the all-outputs view, labelled."""
    ref = g.ref["table1_mbpp_example_logp"]
    headers = ["task", "examples", "n", "gold sum", "paraphrase sum", "own sum", "gold /tok", "paraphrase /tok",
               "own /tok", "paper (1 MBPP example, sum)"]
    rows, used, legacy = [], [], False
    subsets = [("own answer judge-accepted", ("gold", "model")),
               ("paraphrase accepted", ("gold", "paraphrase")),
               ("both accepted", ("gold", "paraphrase", "model"))]
    for t in g.tasks:
        merged = candidate_logps(g, t)
        if not merged:
            continue
        used += [cs[0] for m in g.methods if (cs := g.group(t, m)) and cs[0].candidates()]
        paper = (f"gold {ref['gold']}, own correct {ref['own_correct_response']}" if t == "mbpp" else "—")
        for label, need in subsets:
            ids = sorted(i for i, c in merged.items()
                         if all(s in c and (s == "gold" or c[s]["accepted"]) for s in need))
            vals = {s: ([merged[i][s]["logp"]["sum"] for i in ids], [merged[i][s]["logp"]["per_token"] for i in ids])
                    if s in need else ([], []) for s in T1_COLUMNS}
            rows.append([t, label, str(len(ids)), *(_med(vals[s][0]) for s in T1_COLUMNS),
                         *(_med(vals[s][1]) for s in T1_COLUMNS), paper if label.startswith("own") else "—"])
        allv = {s: [c[s]["logp"] for c in merged.values() if s in c] for s in T1_COLUMNS}
        rows.append([t, "extra: all scored outputs, any verdict",
                     " / ".join(str(len(allv[s])) for s in T1_COLUMNS),
                     *(_med([v["sum"] for v in allv[s]]) for s in T1_COLUMNS),
                     *(_med([v["per_token"] for v in allv[s]]) for s in T1_COLUMNS), "—"])
        legacy |= any("finish_reason" not in it for cs in (g.group(t, m) for m in g.methods) if cs
                      for it in cs[0].candidates())
    notes = ["Medians of log p(response | prompt) under the base model, summed over the response tokens and per "
             "token (end-of-turn token included, the chat template applied), on the training examples where the "
             "named candidates exist and were accepted - the same examples in every column of a row. n = examples.",
             "own = the base model's greedy answer that the task's judge accepted; paraphrase = its rewrite of gold "
             "that the judge, the banned-phrase filter and (new runs) the validity and truncation checks accepted.",
             "Candidates are merged over the methods of a task (lowest seed): S3FT paraphrases only where its own "
             "answer failed, so paraphrase rows come mostly from SDFT's cell, which paraphrases every example.",
             "extra: every scored candidate whatever its verdict, n per source (gold / paraphrase / own) - the view "
             "earlier versions called Table 1; truncated candidates are not scored in new runs.",
             f"Paper: Table 1 [V] is one MBPP training example under {ref['model']}: gold {ref['gold']}, its own "
             f"correct response {ref['own_correct_response']} (measure not reported; we assume the sum)."]
    if legacy:
        notes.append("These results predate the truncation and validity rules (their candidate records carry no "
                     "finish reason): an 'accepted' candidate here may be cut off at the token cap or, on GSM8K, a "
                     "bare restatement of the answer; rerun the preset for the current rules.")
    return Table("table1_logp", "Table 1: log p under the base model of gold, accepted paraphrase and accepted own "
                 "answer", headers, rows, used, notes)


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


# ----------------------------------------------------------------------------------------------------------------
# Per-item scores: seeds are replicates (averaged per item), items the sampling unit
# ----------------------------------------------------------------------------------------------------------------
ITEM_FIELD = {"acc": "correct", "em": "em", "f1": "f1", "containment": "contains"}
METRIC_LABEL = {"acc": "accuracy (judge)", "em": "EM (official SQuAD)", "f1": "F1 (official SQuAD)",
                "containment": "containment (gold alias in answer)"}
BINARY_METRICS = {"acc", "em", "containment"}


def task_scores(cell: Cell, task: str, metric: str) -> dict[str, float]:
    """item id -> the metric's per-item score on a task (reading metrics exist once a cell is re-scored)."""
    field_ = ITEM_FIELD[metric]
    recs = [it for it in cell.items if it["kind"] == "task" and it["task"] == task]
    missing = [it["id"] for it in recs if field_ not in it]
    if missing:
        raise ValueError(f"{cell.path}: task {task} items lack {field_!r} (e.g. {missing[0]}): run "
                         f"python -m repro rescore {cell.path.parent} --data-dir DATA")
    return {it["id"]: float(it[field_]) for it in recs}


def task_clusters(cells: list[Cell], task: str) -> dict[str, str] | None:
    """item id -> its passage, where the items record one (SQuAD); None when items are independent."""
    out = {it["id"]: it["cluster"] for c in cells for it in c.items
           if it["kind"] == "task" and it["task"] == task and "cluster" in it}
    return out or None


def headline_metric(g: "Grid", task: str) -> str:
    """The task's headline metric: stored with the cells (new runs, re-scored cells), else the preset's recipe."""
    stored = {c.doc["cross_task"].get(task, {}).get("headline_metric") for c in g.cells if task in c.doc["cross_task"]}
    stored.discard(None)
    if len(stored) == 1:
        return stored.pop()
    from repro.driver.recipes import load_recipe  # noqa: PLC0415

    try:
        return (load_recipe(g.preset).tasks.get(task) or {}).get("headline_metric", "acc")
    except FileNotFoundError:
        return "acc"


def headline_benches(g: "Grid") -> list[str]:
    """The paper's four benchmarks among ours: the recipe's evaluation.headline_benchmarks as stored with the cells,
    else the registry's headline flags (evals.benchmarks.BENCHMARKS)."""
    from evals.benchmarks import BENCHMARKS  # noqa: PLC0415

    for c in g.cells:
        given = c.doc["provenance"].get("recipe", {}).get("evaluation", {}).get("headline_benchmarks")
        if given is not None:
            return [b for b in g.benches if b in given]
    return [b for b in g.benches if b in BENCHMARKS and BENCHMARKS[b].headline]


def bench_seed_means(cells: list[Cell], bench: str, field_: str | None = None) -> tuple[dict[str, float], int | None]:
    """(item -> mean over the cells' seeds, seeds if the per-seed scores are 0/1 else None)."""
    from evals.stats import seed_means  # noqa: PLC0415

    per = [c.bench_scores(bench) if field_ is None else c.bench_field(bench, field_) for c in cells]
    binary = all(v in (0.0, 1.0) for d in per for v in d.values())
    return seed_means(per), (len(per) if binary else None)


def train_cost(cells: list[Cell]) -> str:
    """Trained tokens and optimiser steps (mean over seeds): methods that train on fewer tokens move the model less."""
    tr = [c.doc.get("training") or {} for c in cells]
    tok = [t["trained_tokens"] for t in tr if t.get("trained_tokens") is not None]
    steps = [t.get("total_steps", len(t.get("steps") or [])) for t in tr if not t.get("skipped")]
    if not tok:
        return "—"
    return f"{mean(tok):g} tok / {mean(steps):g} steps"


def effect_digits(x: float, scale: float = 100.0) -> int:
    """Decimals for an effect: 1, or as many as a non-zero effect needs to show 2 significant digits (never
    printed as +0.0 when it is not 0)."""
    import math  # noqa: PLC0415

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
    import math  # noqa: PLC0415

    if not math.isfinite(m):
        return "none detectable"
    return f"{scale * m:.1f}" if scale != 1.0 else f"{m:.4f}"     # points to 0.1; nats to 4 decimals


# ----------------------------------------------------------------------------------------------------------------
# Table 4: generalization, the paper's headline average drop and the extended average
# ----------------------------------------------------------------------------------------------------------------
def table4(g: Grid) -> Table:
    from evals.stats import paired_average_comparison, paired_comparison  # noqa: PLC0415

    ab = g.ref["abstract_average_drop"]
    head = headline_benches(g)
    headers = ["fine-tuned on", "method", "seeds", *[f"{b}{' *' if b in head else ''}" for b in g.benches],
               f"paper-four avg drop (base − tuned) [95% CI], {len(head)} benchmarks",
               "paper avg drop (abstract)", f"extended avg drop, all {len(g.benches)} benchmarks [95% CI]",
               "Δ log p(correct), paper four (nats)", "trained tokens / steps"]
    base_cells = [c for c in g.cells if c.method == "base" and c.doc["generalization"]]
    # Every task's base cell scores the same base model on the same items; the first one is the base row.
    base_differs = len({json.dumps(c.doc["generalization"]["results"], sort_keys=True) for c in base_cells}) > 1
    rows, used = [], list(base_cells[:1])
    if base_cells:
        res = base_cells[0].doc["generalization"]
        rows.append(["—", "base", "1 run"] + [pts(res["results"][b][res["primary_metric"][b]]) if b in res["results"]
                                              else "—" for b in g.benches] + ["0 (reference)", "—", "0 (reference)",
                                                                              "0", "—"])
    paper_avg = {"sft": f"up to {ab['sft']['value']}", "s3ft": f"{ab['s3ft']['value']}"}
    has_logp = False
    for t, m, cs in g.tuned_rows():
        withd = [c for c in cs if c.doc.get("drops")]
        used += cs
        row = [t, m, str(len(cs))]
        base = g.base(t)
        per: dict[str, tuple] = {}
        for b in g.benches:
            if not withd or base is None or not base.doc["generalization"] or not all(
                    b in c.doc["generalization"]["primary_metric"] for c in withd):
                row.append("skipped†" if any(c.skipped for c in cs) else "—")
                continue
            tuned, seeds = bench_seed_means(withd, b)
            bscore, _ = bench_seed_means([base], b)
            r = paired_comparison(bscore, tuned, binary_seeds=None if seeds is None else (1, seeds), seed=BOOT_SEED)
            per[b] = (bscore, tuned, seeds)
            row.append(f"{pts(r['mean_b'])} (drop {effect_ci_txt(r['diff'], r['ci95'])})")

        def avg(names: list[str]) -> str:
            if not names or not all(n in per for n in names):
                return "skipped†" if any(c.skipped for c in cs) else "—"
            r = paired_average_comparison({n: per[n] for n in names}, seed=BOOT_SEED)
            return effect_ci_txt(r["diff"], r["ci95"])

        logp = "—"
        if head and withd and base is not None and all(c.has_bench_field(b, "logp_correct")
                                                        for c in withd + [base] for b in head):
            has_logp = True
            shifts = {b: (bench_seed_means(withd, b, "logp_correct")[0], bench_seed_means([base], b,
                                                                                            "logp_correct")[0], None)
                      for b in head}
            r = paired_average_comparison(shifts, seed=BOOT_SEED)
            logp = f"{r['diff']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]"
        row += [avg(head), paper_avg.get(m, "— (not in paper)"), avg(list(g.benches)), logp, train_cost(withd)]
        rows.append(row)
    rows.append(["paper", "Table 4 / abstract", "—"] + ["n/r"] * len(g.benches)
                + ["SFT up to 4.4, S3FT 2.5", "SFT up to 4.4, S3FT 2.5", "—", "—", "n/r"])
    metrics = {b: m for c in g.cells for b, m in ((c.doc["generalization"] or {}).get("primary_metric") or {}).items()}
    notes = ["Scores (%) on each benchmark's primary metric ("
             + ", ".join(f"{b}: {metrics[b].split(',')[0]}" for b in g.benches)
             + "). Per cell: tuned score, mean over seeds, and (drop = base − tuned [95% CI]) in the PAPER'S SIGN: "
               "positive = forgetting. Per item the tuned score is the mean over the method's seeds (seeds are "
               "replicates, items the sampling unit); CI: percentile bootstrap over items (scipy.stats.bootstrap, "
               f"seed {BOOT_SEED}).",
             f"Paper-four avg drop: the paper's headline 'average drop', the unweighted mean of the drops over "
             f"{', '.join(head) or 'none of its four benchmarks'} (* in the header; TruthfulQA counted once, as mc2) "
             "- the quantity the abstract's SFT 'up to 4.4' (worst fine-tuning dataset [I]) and S3FT 2.5 [V] "
             "report. CI: bootstrap resampling items within each benchmark. Which benchmarks feed it: the recipe's "
             "evaluation.headline_benchmarks / evals.benchmarks.BENCHMARKS[...].headline.",
             "Extended avg drop: the same mean over every benchmark run here (adds ARC, TruthfulQA mc1, 5-shot "
             "MMLU where present). It is not the paper's number.",
             "Δ log p(correct): mean over the paper-four benchmarks of the per-item change of log p of the correct "
             "choice (normalised over the choices), tuned − base, nats; negative = the model moved away from the "
             "right answers. A continuous measure that shows shifts before an accuracy flips; '—' for cells run "
             "before it was recorded.",
             "Trained tokens / steps: response tokens trained on and optimiser steps (mean over seeds); a method "
             "that trains on fewer or shorter targets moves the model less, whatever its targets.",
             "Paper Table 4 cell values are not available to us (n/r = not reported)."]
    if not has_logp:
        notes[3] = notes[3].replace("'—' for cells run before it was recorded.",
                                    "'—' here: these cells were run before it was recorded (a new run records it).")
    if any(c.skipped for c in used):
        notes.append("† training skipped (no training targets): no drops were computed for that row.")
    if base_differs:
        notes.append(f"WARNING: the base cells disagree on benchmark scores; the base row is {base_cells[0].task}'s "
                     "and each row's drop is against its own task's base run.")
    return Table("table4_generalization", "Table 4: generalization (forgetting) on held-out benchmarks",
                 headers, rows, used, notes)


# ----------------------------------------------------------------------------------------------------------------
# Paired comparisons between methods
# ----------------------------------------------------------------------------------------------------------------
def comparison_rows(g: Grid) -> list[dict]:
    """Every comparison of COMPARISONS on every task, as plain dicts (what the table prints and the regression
    test recomputes): in-domain on the headline metric (and containment beside F1/EM on reading tasks), the
    paper-four average drop, the extended average drop, and Δ log p(correct) where recorded."""
    from evals.stats import paired_average_comparison, paired_comparison, seed_means, verdict  # noqa: PLC0415

    out = []
    head = headline_benches(g)
    for t in g.tasks:
        for a, b in COMPARISONS:
            ca, cb = g.group(t, a), g.group(t, b)
            if not ca or not cb:
                continue
            common = {"task": t, "a": a, "b": b, "seeds_a": len(ca), "seeds_b": len(cb), "cells": ca + cb}
            hm = headline_metric(g, t)
            metrics = [hm] + (["containment"] if hm in ("em", "f1") else [])
            for metric in metrics:
                A = seed_means([task_scores(c, t, metric) for c in ca])
                B = seed_means([task_scores(c, t, metric) for c in cb])
                r = paired_comparison(A, B, clusters=task_clusters(ca + cb, t), seed=BOOT_SEED,
                                      binary_seeds=(len(ca), len(cb)) if metric in BINARY_METRICS else None)
                label = f"in-domain {METRIC_LABEL[metric]}" + (" (headline)" if metric == hm else "")
                out.append({**common, "measure": label, "kind": "in_domain", "metric": metric, **r,
                            "value_a": r["mean_a"], "value_b": r["mean_b"], "unit": "points", "scale": 100.0,
                            "verdict": verdict(r["diff"], r["p_value"], r["mde"], better=f"{a} is better",
                                               worse=f"{b} is better")})
            base = g.base(t)
            da, db = [c for c in ca if c.doc.get("drops")], [c for c in cb if c.doc.get("drops")]
            if base is None or not base.doc["generalization"] or not da or not db:
                out.append({**common, "measure": "forgetting", "kind": "none",
                            "verdict": "no benchmark drops (training skipped or no benchmarks)"})
                continue
            cost = f"{train_cost(da)}; {train_cost(db)}"
            for label, names in ((f"paper-four avg drop ({len(head)} benchmarks, base − tuned)", head),
                                 (f"extended avg drop ({len(g.benches)} benchmarks, base − tuned)", list(g.benches))):
                if not names or (names is not head and set(names) == set(head)):   # no extra benchmark: one row
                    continue
                per, va, vb = {}, [], []
                for bn in names:
                    sa, na = bench_seed_means(da, bn)
                    sb, nb = bench_seed_means(db, bn)
                    z, _ = bench_seed_means([base], bn)
                    # drop_A - drop_B = (base - A) - (base - B) = B - A per item
                    per[bn] = (sb, sa, None if na is None or nb is None else max(na, nb))
                    va.append(sum(z[k] - sa[k] for k in sa) / len(sa))
                    vb.append(sum(z[k] - sb[k] for k in sb) / len(sb))
                r = paired_average_comparison(per, seed=BOOT_SEED)
                out.append({**common, "measure": label, "kind": "drop", **r, "value_a": mean(va),
                            "value_b": mean(vb), "unit": "points", "scale": 100.0, "cost": cost,
                            "verdict": verdict(r["diff"], r["p_value"], r["mde"], better=f"{a} forgets more",
                                               worse=f"{a} forgets less")})
            if head and all(c.has_bench_field(bn, "logp_correct") for c in da + db + [base] for bn in head):
                per = {bn: (bench_seed_means(da, bn, "logp_correct")[0], bench_seed_means(db, bn, "logp_correct")[0],
                            None) for bn in head}
                z = {bn: bench_seed_means([base], bn, "logp_correct")[0] for bn in head}
                r = paired_average_comparison(per, seed=BOOT_SEED)
                shift = lambda s: mean([sum(s[bn][k] - z[bn][k] for k in s[bn]) / len(s[bn]) for bn in head])  # noqa: E731
                out.append({**common, "measure": "Δ log p(correct), paper four (tuned − base, nats)", "kind": "logp",
                            **r, "value_a": shift({bn: per[bn][0] for bn in head}),
                            "value_b": shift({bn: per[bn][1] for bn in head}), "unit": "nats", "scale": 1.0,
                            "cost": cost,
                            "verdict": verdict(r["diff"], r["p_value"], r["mde"], better=f"{a} moves less",
                                               worse=f"{a} moves more", unit="nats", scale=1.0)})
    return out


def table_comparisons(g: Grid) -> Table:
    headers = ["task", "A vs B", "measure", "seeds A/B", "n", "A", "B", "A − B [95% CI]", "p", "MDE (80% power)",
               "test", "reading", "trained tokens / steps (A; B)"]
    rows, used = [], []
    for r in comparison_rows(g):
        used += r["cells"]
        if r["kind"] == "none":
            rows.append([r["task"], f"{r['a']} vs {r['b']}", r["measure"], f"{r['seeds_a']}/{r['seeds_b']}"]
                        + ["—"] * 7 + [r["verdict"], "—"])
            continue
        sc = r["scale"]
        val = (lambda x: f"{x:+.4f}") if r["unit"] == "nats" else (
            (lambda x: effect_txt(x, sc)) if r["kind"] == "drop" else pts)
        n = f"{r['n']}" + (f" ({r['n_clusters']} passages)" if r.get("n_clusters", r["n"]) < r["n"] else "")
        mde = mde_txt(r["mde"], sc) + (" nats" if r["unit"] == "nats" else "")
        rows.append([r["task"], f"{r['a']} vs {r['b']}", r["measure"], f"{r['seeds_a']}/{r['seeds_b']}", n,
                     val(r["value_a"]), val(r["value_b"]),
                     (f"{r['diff']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]" if r["unit"] == "nats"
                      else effect_ci_txt(r["diff"], r["ci95"], sc)), p_txt(r["p_value"]), mde,
                     r["test"], r["verdict"], r.get("cost", "—")])
    from evals.stats import K_MIN, Z_POWER  # noqa: PLC0415

    notes = ["Design: seeds are replicates of training and items the sampling unit. Per item, each method's score "
             "is the mean over the seeds it has; methods are then compared paired on the same items (never items "
             "pooled over seeds). n = items (SQuAD: clustered by passage, which is resampled and permuted whole).",
             "Tests (evals.stats.paired_comparison / paired_average_comparison, scipy.stats): exact McNemar "
             "(binomtest on discordant items) for 0/1 scores of one seed each; sign-flip permutation "
             "(permutation_test, exact up to 16 units) for seed means and continuous scores; cluster sign-flip "
             "where items share a passage. CI: percentile bootstrap over items (clusters; within each benchmark "
             f"for averages), seed {BOOT_SEED}. A system against an exact copy of itself gives 0, [0, 0], p = 1.",
             f"MDE: the smallest true A − B this n detects with 80% power at two-sided α = 0.05: "
             f"(z_.975 + z_.80) · se = {Z_POWER:.2f} · sd(differences)/√n (averages: the stratified se), with se "
             f"floored at √{K_MIN}·u/n (u: one seed's unit change of a 0/1 score, else the sd of the scores), the "
             f"exact test's own limit ({K_MIN} same-direction changes); 'none detectable' = fewer than {K_MIN} items.",
             "Reading: a direction ('is better', 'forgets less') is stated only when p < 0.05; otherwise 'cannot "
             "tell at this n' with the effect size that could hide (the MDE). Drops are in the paper's sign "
             "(base − tuned, positive = forgetting), so A − B < 0 means A forgets less.",
             "Trained tokens / steps are shown beside every forgetting comparison: a method trained on fewer tokens "
             "moves the model less, whatever its targets."]
    return Table("comparisons", "Paired comparisons: in-domain and forgetting, with n, CI, p and MDE", headers, rows,
                 used, notes)


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
    headers = ["task", "method", "seeds", "in-task KL(base‖tuned) / token", "gold NLL tuned / token",
               "gold NLL base / token", "Δ gold NLL", "prompts", "KL tokens",
               "cross-domain KL(base‖tuned) / token (benchmark texts)", "trained tokens / steps"]
    rows, used = [], []
    for t, m, cs in g.tuned_rows():
        fs = [c.doc["forgetting_signal"] for c in cs if c.doc.get("forgetting_signal")]
        if not fs:
            continue
        used += cs
        raw = lambda k: mean_sd([f[k] for f in fs], scale_pts=False)   # noqa: E731  (nats, not points)
        cross = [(f.get("cross_domain") or {}).get("kl_base_tuned_per_token") for f in fs]
        rows.append([t, m, str(len(fs)), raw("kl_base_tuned_per_token"), raw("nll_gold_tuned_per_token"),
                     raw("nll_gold_base_per_token"),
                     mean_sd([f["nll_gold_tuned_per_token"] - f["nll_gold_base_per_token"] for f in fs], sign=True,
                             scale_pts=False),
                     str(fs[0]["n_prompts"]), str(fs[0]["n_kl_tokens"]),
                     (f"{mean_sd([x for x in cross if x is not None], scale_pts=False)} "
                      f"({fs[0]['cross_domain']['n_texts']} texts)") if cross and all(x is not None for x in cross)
                     else "— (not recorded)", train_cost(cs)])
    notes = ["In-task forgetting signal (nats per token, mean ± sd over seeds) on held-out test prompts of the "
             "cell's OWN task: KL(base‖tuned) of the next-token distributions on the base model's answers, and the "
             "negative log-likelihood of the gold answers under the tuned and base model. It measures how far "
             "training moved the model where it was trained, not forgetting elsewhere.",
             "Cross-domain KL: the same KL(base‖tuned) per token on texts of OTHER domains - the first items of the "
             "headline benchmarks (prompt + correct answer, plain text) - where forgetting is measured; '— (not "
             "recorded)' for cells run before it existed.",
             "Trained tokens / steps (mean over seeds): methods that train on fewer tokens move the model less. "
             "Rows with skipped training have no signal and are left out."]
    return Table("forgetting_signal", "Forgetting signal: in-task and cross-domain KL(base‖tuned), gold NLL", headers,
                 rows, used, notes)


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


def paper_four_drop(cell: Cell, base: Cell, benches: list[str]) -> float:
    """One cell's paper-four average drop in the paper's sign (base − tuned), from its items."""
    drops = []
    for b in benches:
        t, z = cell.bench_scores(b), base.bench_scores(b)
        keys = sorted(set(t) & set(z))
        drops.append(sum(z[k] - t[k] for k in keys) / len(keys))
    return sum(drops) / len(drops)


def fig_gain_vs_drop(g: Grid, path: Path) -> None:
    from evals.stats import aggregate_seeds  # noqa: PLC0415

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = {m: "osD^vP*X"[i % 8] for i, m in enumerate(g.methods)}
    colors = {t: f"C{i}" for i, t in enumerate(g.tasks)}
    n = 0
    head = headline_benches(g)
    for t, m, cs in g.tuned_rows():
        base = g.base(t)
        hm = headline_metric(g, t)
        pts_ = [(_metric(c, hm) - _metric(base, hm), paper_four_drop(c, base, head)) for c in cs
                if base is not None and c.doc.get("drops") and head and _metric(c, hm) is not None]
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
    tables = [table1(g), table2(g), table3(g), table4(g), table_comparisons(g), cross, table_forgetting(g), table_cost(g)]
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
    """What a finished `python -m repro run` (and `repro compare`) prints: in-domain scores, target sources, the
    generalization drops and the paired comparisons of `preset` under `results`, as Markdown (the same tables this
    script writes); '' when the preset has no results there."""
    cells = load_cells(results, preset)
    if not cells:
        return ""
    g = Grid(preset, cells, json.loads(PAPER_REFERENCE.read_text()))
    return "\n\n".join(tb.markdown() for tb in (table2(g), table3(g), table4(g), table_comparisons(g)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Regenerate the S3FT paper's tables (Markdown + LaTeX) and figures (PNG) from result files, "
                    "beside the paper's published values (results/paper_reference.json). Reads JSON only.",
        epilog="Outputs: <out>/tables/<preset>/*.md, *.tex, MANIFEST.json and <out>/figures/<preset>/*.png. "
               "Tables: Table 1 (log p of gold / accepted paraphrase / accepted own answer), Table 2 (in-domain accuracy), Table 3 (target sources), Table 4 (generalization drops), "
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

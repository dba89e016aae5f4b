"""The paper's Tables 1-3 and the per-cell tables (cross-task matrix, forgetting signal, cost, measured time), each a ``Table``
built from a preset's ``Grid``. Table 4 is in generalization.py, the paired comparisons in comparisons.py."""
from __future__ import annotations

import statistics

from repro.report.formatting import Table, mean, mean_sd, pts, words
from repro.report.load import Grid, order
from repro.report.measures import (
    METRIC_LABEL,
    candidate_logps,
    cell_metric,
    judge_kind,
    task_headline_metric,
    train_cost,
)

# Our task -> the paper's dataset column. squad is not the paper's dataset: it is shown beside "paper: NQ".
PAPER_DATASET = {"gsm8k": "GSM8K", "mbpp": "MBPP", "nq_open": "NQ", "squad": "NQ"}
SOURCES = ["model", "paraphrase", "gold"]
T1_COLUMNS = ["gold", "paraphrase", "model"]   # Table 1's column order: the reference first, the model's own last


def paper_col(task: str) -> str:
    ds = PAPER_DATASET.get(task)
    if ds is None:
        return f"{task} paper"
    return f"{task} paper: NQ" if task == "squad" else f"{task} paper ({ds})"


READING_EXTRA = [("em", "EM"), ("f1", "F1"), ("containment", "containment"), ("acc", "judge acc")]


def table2(g: Grid) -> Table:
    ref = g.ref["table2_in_domain_accuracy"]["values"]
    heads = {t: task_headline_metric(g, t) for t in g.tasks}
    reading = {t: any((c.doc["in_domain"].get("reading") or c.doc["cross_task"].get(t, {}).get("reading"))
                      for c in g.cells if c.task == t) for t in g.tasks}
    extra = {t: [(k, lab) for k, lab in READING_EXTRA if k != heads[t] and not (k == "acc" and
                                                                                 judge_kind(g, t) == "match")]
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
                row.append(f"{mean_sd([cell_metric(c, heads[t]) for c in cs])}{mark} ({runs}, n={n})")
                for k, _ in extra[t]:
                    vals = [cell_metric(c, k) for c in cs]
                    row.append("—" if None in vals else (words(vals) if k == "answer_words" else mean_sd(vals)))
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


def _med(xs: list[float]) -> str:
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
    by_source = order({m for m in g.methods if m != "base"}, ["s3ft", "ssr", "sdft", "self_only", "sft", "sft_matched"])
    rows, used = [], []
    for t in g.tasks:
        for m in by_source:
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


def cross_task_value(cell_doc: dict, task: str, metric: str) -> float | None:
    """A cell's score on an evaluated task on that task's headline metric (None where not recorded)."""
    entry = cell_doc["cross_task"].get(task)
    if entry is None:
        return None
    if metric == "acc":
        return float(entry["acc,none"])
    v = (entry.get("reading") or {}).get(metric)
    return None if v is None else float(v)


def table_cross_task(g: Grid) -> tuple[Table, list[str], list[list[float | None]], list[list[float | None]]]:
    """The cross-task matrix on each evaluated task's headline metric; also returns the row labels, scores and
    deltas for the heatmap."""
    metrics = {e: task_headline_metric(g, e) for e in g.eval_tasks}
    base_acc: dict[str, float | None] = {}
    used = []
    for e in g.eval_tasks:
        b = g.base(e) if g.group(e, "base") else next((c for c in g.cells if c.method == "base"
                                                        and e in c.doc["cross_task"]), None)
        base_acc[e] = None if b is None else cross_task_value(b.doc, e, metrics[e])
        used += [b] if b is not None else []
    labels, accs, deltas = ["base"], [[base_acc[e] for e in g.eval_tasks]], [[0.0 if base_acc[e] is not None else None
                                                                             for e in g.eval_tasks]]
    rows = [["—", "base"] + [pts(base_acc[e]) for e in g.eval_tasks]]
    for t, m, cs in g.tuned_rows():
        used += cs
        row, ra, rd = [t, m], [], []
        for e in g.eval_tasks:
            vals = [v for c in cs if (v := cross_task_value(c.doc, e, metrics[e])) is not None]
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
    notes = ["Score (%) of each model on every task's test subset on that task's headline metric (in the column "
             "header), mean over seeds, with (Δ vs base) in points. * = in-domain (the task the model was "
             "fine-tuned on). † = training skipped (no targets): base model."]
    table = Table("cross_task", "Cross-task matrix: fine-tuned on (rows) x evaluated on (columns), headline metric",
                  ["fine-tuned on", "method"] + [f"{e}: {METRIC_LABEL[metrics[e]]}" for e in g.eval_tasks], rows,
                  used, notes)
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
        raw = lambda k: mean_sd([f[k] for f in fs], scale_pts=False)   # noqa: E731, B023  (nats, not points)
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




def table_measured_time(g: Grid) -> Table:
    """The time each cell took, from the timing.json its runs journalled stage by stage (so a cell killed and
    resumed counts every finished stage once, across processes and sessions), and the preset's total: what a
    study's cost is reported from. provenance.wall_time_s (the cost table) holds only the last process's stages."""
    headers = ["task", "method", "seed", "stages", "wall (h)", "CPU (h)", "threads", "load at end"]
    rows, used, untimed = [], [], []
    for t in g.tasks:
        for m in g.methods:
            for c in g.group(t, m):
                tm = c.timing
                if tm is None:
                    untimed.append(c.cell.label)
                    continue
                used.append(c)
                threads = sorted({str(s.get("threads")) for s in tm["stages"] if s.get("threads")})
                load = tm.get("loadavg_at_end")
                rows.append([t, m, str(c.seed), ", ".join(dict.fromkeys(s["stage"] for s in tm["stages"])),
                             f"{tm['wall_s'] / 3600:.2f}", f"{tm['cpu_s'] / 3600:.2f}", "/".join(threads) or "—",
                             f"{load[0]:.1f}" if load else "—"])
    if used:
        rows.append([f"all {len(used)} timed cells", "", "", "", f"{sum(c.timing['wall_s'] for c in used) / 3600:.2f}",
                     f"{sum(c.timing['cpu_s'] for c in used) / 3600:.2f}", "", ""])
    notes = ["Hours summed over every stage in each cell's timing.json (written by `python -m repro run`). CPU time "
             "is the driver process's, all threads: closer than wall time to what a quiet machine takes when the "
             "cores were shared, but an overestimate when they were oversubscribed (threads spinning on busy "
             "cores count). A stage shared with other cells (the task's own answers, a method's targets) is "
             "counted in the cell that ran it; a stage served from the cache costs ~0.",
             "Stages recovered from a run's log rather than the journal (runs that predate it) carry a 'source' "
             "field in timing.json; the cell's 'notes' field says what was not counted."]
    if untimed:
        notes.append(f"No timing.json ({len(untimed)} cells, run before the driver wrote it; not in the total): "
                     f"{', '.join(untimed)}.")
    return Table("measured_time", "Measured time per cell (timing.json)", headers, rows, used, notes)

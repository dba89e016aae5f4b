"""Table 4: generalization (forgetting) on held-out benchmarks - per benchmark the tuned score and its drop, the
paper's headline average drop over its four benchmarks, the extended average, and the log p(correct) shift."""
from __future__ import annotations

import json

from evals.stats import paired_average_comparison, paired_comparison
from repro.report.formatting import Table, effect_ci_txt, pts
from repro.report.load import Grid
from repro.report.measures import BOOT_SEED, bench_seed_means, headline_benches, train_cost


def table4(g: Grid) -> Table:
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
            if not names or not all(n in per for n in names):  # noqa: B023  (used within the iteration)
                return "skipped†" if any(c.skipped for c in cs) else "—"  # noqa: B023  (used within the iteration)
            r = paired_average_comparison({n: per[n] for n in names}, seed=BOOT_SEED)  # noqa: B023  (used within the iteration)
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



"""Paired comparisons between methods (S3FT vs SFT, ...): in-domain and forgetting, each with n, effect [95% CI],
p, Holm-adjusted p and the minimum detectable effect, from per-item scores (seeds averaged per item, methods paired
on items).

Multiplicity: the family is every tested row of one preset's comparisons table (every task, pair and measure). A
row's reading states a direction only when its Holm-adjusted p is below 0.05, so the table as a whole keeps the
family-wise error rate at 0.05; the raw p stays beside it."""
from __future__ import annotations

from evals.stats import K_MIN, Z_POWER, holm, paired_average_comparison, paired_comparison, seed_means, verdict
from repro.report.formatting import Table, effect_ci_txt, effect_txt, mde_txt, mean, p_txt, pts
from repro.report.load import Grid
from repro.report.measures import (
    BINARY_METRICS,
    BOOT_SEED,
    METRIC_LABEL,
    bench_seed_means,
    headline_benches,
    task_clusters,
    task_headline_metric,
    task_scores,
    train_cost,
)

# s3ft vs sft_matched: S3FT against SFT trained for S3FT's number of target tokens (is the gain the budget?)
COMPARISONS = [("s3ft", "sft"), ("s3ft", "sdft"), ("ssr", "sft"), ("s3ft", "sft_matched")]


def comparison_rows(g: Grid) -> list[dict]:
    """Every comparison of COMPARISONS on every task, as plain dicts (what the table prints and the regression
    test recomputes): in-domain on the headline metric (and containment beside F1/EM on reading tasks), the
    paper-four average drop, the extended average drop, and Δ log p(correct) where recorded."""
    out = []
    head = headline_benches(g)
    for t in g.tasks:
        for a, b in COMPARISONS:
            ca, cb = g.group(t, a), g.group(t, b)
            if not ca or not cb:
                continue
            common = {"task": t, "a": a, "b": b, "seeds_a": len(ca), "seeds_b": len(cb), "cells": ca + cb}
            hm = task_headline_metric(g, t)
            metrics = [hm] + (["containment"] if hm in ("em", "f1") else [])
            for metric in metrics:
                A = seed_means([task_scores(c, t, metric) for c in ca])
                B = seed_means([task_scores(c, t, metric) for c in cb])
                r = paired_comparison(A, B, clusters=task_clusters(ca + cb, t), seed=BOOT_SEED,
                                      binary_seeds=(len(ca), len(cb)) if metric in BINARY_METRICS else None)
                label = f"in-domain {METRIC_LABEL[metric]}" + (" (headline)" if metric == hm else "")
                out.append({**common, "measure": label, "kind": "in_domain", "metric": metric, **r,
                            "value_a": r["mean_a"], "value_b": r["mean_b"], "unit": "points", "scale": 100.0,
                            "better": f"{a} is better", "worse": f"{b} is better"})
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
                            "better": f"{a} forgets more", "worse": f"{a} forgets less"})
            if head and all(c.has_bench_field(bn, "logp_correct") for c in da + db + [base] for bn in head):
                per = {bn: (bench_seed_means(da, bn, "logp_correct")[0], bench_seed_means(db, bn, "logp_correct")[0],
                            None) for bn in head}
                z = {bn: bench_seed_means([base], bn, "logp_correct")[0] for bn in head}
                r = paired_average_comparison(per, seed=BOOT_SEED)
                shift = lambda s: mean([sum(s[bn][k] - z[bn][k] for k in s[bn]) / len(s[bn]) for bn in head])  # noqa: E731, B023
                out.append({**common, "measure": "Δ log p(correct), paper four (tuned − base, nats)", "kind": "logp",
                            **r, "value_a": shift({bn: per[bn][0] for bn in head}),
                            "value_b": shift({bn: per[bn][1] for bn in head}), "unit": "nats", "scale": 1.0,
                            "cost": cost,
                            # A - B > 0: A's tuned model gives the correct choices more log p than B's does
                            "better": f"{a} leaves log p(correct) higher",
                            "worse": f"{a} leaves log p(correct) lower"})
    return with_holm(out)


def with_holm(rows: list[dict]) -> list[dict]:
    """Add each tested row's Holm-adjusted p (the family: every tested row of `rows`, i.e. of one preset) and its
    reading, which states a direction only when the adjusted p < 0.05."""
    tested = [r for r in rows if r["kind"] != "none"]
    for r, p_adj in zip(tested, holm([r["p_value"] for r in tested])):
        r["p_holm"], r["family"] = p_adj, len(tested)
        r["verdict"] = verdict(r["diff"], p_adj, r["mde"], better=r["better"], worse=r["worse"], unit=r["unit"],
                               scale=r["scale"], p_raw=r["p_value"], family=len(tested))
    return rows


def table_comparisons(g: Grid, crows: list[dict] | None = None) -> Table:
    """The comparisons table (``crows``: comparison_rows(g), when the caller has them already)."""
    headers = ["task", "A vs B", "measure", "seeds A/B", "n", "A", "B", "A − B [95% CI]", "p", "p (Holm)",
               "MDE (80% power)", "test", "reading", "trained tokens / steps (A; B)"]
    rows, used = [], []
    crows = comparison_rows(g) if crows is None else crows
    n_tested = sum(r["kind"] != "none" for r in crows)
    for r in crows:
        used += r["cells"]
        if r["kind"] == "none":
            rows.append([r["task"], f"{r['a']} vs {r['b']}", r["measure"], f"{r['seeds_a']}/{r['seeds_b']}"]
                        + ["—"] * 8 + [r["verdict"], "—"])
            continue
        sc = r["scale"]
        val = (lambda x: f"{x:+.4f}") if r["unit"] == "nats" else (
            (lambda x: effect_txt(x, sc)) if r["kind"] == "drop" else pts)  # noqa: B023  (used within the iteration)
        n = f"{r['n']}" + (f" ({r['n_clusters']} passages)" if r.get("n_clusters", r["n"]) < r["n"] else "")
        mde = mde_txt(r["mde"], sc) + (" nats" if r["unit"] == "nats" else "")
        rows.append([r["task"], f"{r['a']} vs {r['b']}", r["measure"], f"{r['seeds_a']}/{r['seeds_b']}", n,
                     val(r["value_a"]), val(r["value_b"]),
                     (f"{r['diff']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]" if r["unit"] == "nats"
                      else effect_ci_txt(r["diff"], r["ci95"], sc)), p_txt(r["p_value"]), p_txt(r["p_holm"]), mde,
                     r["test"], r["verdict"], r.get("cost", "—")])
    notes = ["Design: seeds are replicates of training and items the sampling unit. Per item, each method's score "
             "is the mean over the seeds it has; methods are then compared paired on the same items (never items "
             "pooled over seeds). n = items (SQuAD: clustered by passage, which is resampled and permuted whole).",
             "Tests (evals.stats.paired_comparison / paired_average_comparison, scipy.stats): exact McNemar "
             "(binomtest on discordant items) for 0/1 scores of one seed each; sign-flip permutation "
             "(permutation_test, exact up to 16 units) for seed means and continuous scores; cluster sign-flip "
             "where items share a passage. CI: percentile bootstrap over items (clusters; within each benchmark "
             f"for averages), seed {BOOT_SEED}. A system against an exact copy of itself gives 0, [0, 0], p = 1.",
             f"MDE: the smallest true A − B this n detects with 80% power at two-sided α = 0.05: "
             f"(z_.975 + z_.80) · se = {Z_POWER:.2f} · sd(differences)/√n (clustered items: the larger of that and "
             f"the cluster-robust se; averages: the stratified se), with se "
             f"floored at √{K_MIN}·u/n (u: one seed's unit change of a 0/1 score, else the sd of the scores), the "
             f"exact test's own limit ({K_MIN} same-direction changes); 'none detectable' = fewer than {K_MIN} items.",
             f"Multiplicity: the family is the {n_tested} tested rows of this table (every task, pair and measure "
             "of the preset); p (Holm) is Holm's step-down adjusted p over them (evals.stats.holm), which keeps the "
             "chance of any false direction in the table at 0.05. p is the unadjusted p of the row alone.",
             "Reading: a direction ('is better', 'forgets less') is stated only when the Holm-adjusted p < 0.05; "
             "otherwise 'cannot tell at this n' with the effect size that could hide (the MDE), and a note where the "
             "raw p alone was below 0.05. Drops are in the paper's sign "
             "(base − tuned, positive = forgetting), so A − B < 0 means A forgets less.",
             "Trained tokens / steps are shown beside every forgetting comparison: a method trained on fewer tokens "
             "moves the model less, whatever its targets."]
    return Table("comparisons", "Paired comparisons: in-domain and forgetting, with n, CI, p and MDE", headers, rows,
                 used, notes)



"""Power analysis: how large an effect a study of a given size could detect, estimated from item-level results.

Answers the design question of issue 17 before the study runs: with n_test test items, n_bench items per benchmark
and S training seeds, what is the minimum detectable effect (MDE) at 80% power, two-sided alpha = 0.05, of
  (a) the difference between two methods' in-domain scores (paired on test items), and
  (b) the difference between their paper-four average drops (the paper's headline; paired on benchmark items:
      the base model's scores cancel item by item, so it is the mean over the four benchmarks of mean(A_k - B_k)).

The formula is evals/stats.py's (its Z_POWER and K_MIN are reused, so a projection at the measured size gives the
MDE the comparison tables print, up to the variance model below):

    MDE = (z_{1-alpha/2} + z_{power}) * se = Z_POWER * se            (Z_POWER = 1.960 + 0.842 = 2.80)

with the standard error of the difference built from variance components estimated from the data:

    (a) se^2 = sigma_item^2 * deff(n) / n  +  (sigma_seed^2 + sigma_e^2 / n) / S
    (b) se^2 = (1/K^2) * sum_k sigma_item,k^2 / n_k  +  (sigma_seed,avg^2 + (1/K^2) sum_k sigma_e,k^2 / n_k) / S

  sigma_item^2  the per-item paired-difference variance that does not change with seeds (item x method: some items
                favour A whatever the seed): the variance of the seed-mean per-item differences, less the part of
                it that is seed noise (sigma_e^2 / S0 for the S0 seeds the data has);
  sigma_e^2     item x seed noise: the residual variance of the (seeds x items) differences once each seed's and
                each item's mean is removed (two-way analysis of variance; needs 2+ seeds; 0 with one seed, which
                the output says);
  sigma_seed^2  between-seed variance of the whole difference (training noise: one seed's adapter is better
                everywhere): the variance over seeds of the per-seed mean difference, less what its item noise
                explains (sigma_e^2 / n), floored at 0 (a method-of-moments estimate; with two seeds it is rough);
                for (b) it is estimated on the average itself, since one seed's adapter moves all four benchmarks;
  deff(n)       the design effect of clustered items (SQuAD: questions share passages, and comparisons resample
                passages): 1 + (n/G - 1) * rho, with the intra-cluster correlation rho estimated from the data's
                cluster-robust standard error (deff_obs = se_cluster^2 / se_iid^2 = 1 + (m_eff - 1) * rho) and G the
                number of clusters the design's n items come from (at most the test split's passages);
  S             training seeds; more seeds shrink only the seed term. The base model has no seed.
As in evals/stats.py a 0/1 score (one seed) cannot show a change smaller than one flip per item, so the se is
floored at sqrt(K_MIN) * (1/S) / n (per benchmark for (b)); continuous scores (F1, TruthfulQA mc2) have no floor.
The components come from small pilots: the MDEs are estimates, and the table says from which cells and how many
items each variance was estimated.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evals.benchmarks import BENCHMARKS
from evals.data import DataError, resolve_data_dir
from evals.stats import K_MIN, Z_POWER
from evals.tasks import get_task

ITEM_FIELD = {"acc": "correct", "em": "em", "f1": "f1", "containment": "contains"}   # as paper_tables.py
BINARY_METRICS = {"acc", "em", "containment"}


# --------------------------------------------------------------------------------------------------------------
# the formula
# --------------------------------------------------------------------------------------------------------------
def mde(sd_item: float, n: int, *, seeds: int = 1, seed_var: float = 0.0, item_seed_var: float = 0.0,
        deff: float = 1.0, binary: bool = False) -> float:
    """Z_POWER * se of a paired mean difference over n items and `seeds` training seeds (module docstring, (a))."""

    if n < 1 or seeds < 1:
        raise ValueError(f"n and seeds must be positive, got n={n}, seeds={seeds}")
    se2 = sd_item**2 * deff / n + (seed_var + item_seed_var / n) / seeds
    floor = math.sqrt(K_MIN) * (1.0 / seeds) / n if binary else 0.0
    return Z_POWER * max(math.sqrt(se2), floor)


def mde_average(parts: Sequence[Mapping[str, float]], n_items: Sequence[int], *, seeds: int = 1,
                seed_var: float = 0.0) -> float:
    """Z_POWER * se of the unweighted mean over K benchmarks of paired mean differences (module docstring, (b)).

    parts[k]: {"sd_item", "item_seed_var", "binary"} of benchmark k; n_items[k]: its items; seed_var: the
    between-seed variance of the average itself."""

    if len(parts) != len(n_items) or not parts:
        raise ValueError("need one item count per benchmark, and at least one benchmark")
    k = len(parts)
    var = 0.0
    for p, n in zip(parts, n_items):
        if n < 1:
            raise ValueError(f"n_items must be positive, got {n}")
        se2 = p["sd_item"] ** 2 / n + p.get("item_seed_var", 0.0) / (n * seeds)
        floor = math.sqrt(K_MIN) * (1.0 / seeds) / n if p.get("binary") else 0.0
        var += max(se2, floor * floor)
    return Z_POWER * math.sqrt(var / (k * k) + seed_var / seeds)


# --------------------------------------------------------------------------------------------------------------
# variance components from per-seed per-item differences
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Components:
    """Variance components of one paired difference (A - B), estimated from an (S0 seeds x n items) matrix."""

    n: int                       # items the estimate comes from
    seeds: int                   # S0: seed replicates the estimate comes from
    sd_item: float               # sqrt(sigma_item^2): the seed-independent per-item sd
    item_seed_var: float         # sigma_e^2
    seed_var: float              # sigma_seed^2
    sd_seed_mean: float          # sd of the seed-mean per-item differences (what evals/stats.py calls sd_diff)
    binary: bool = False
    deff: float = 1.0            # observed design effect (clustered items)
    rho: float = 0.0             # intra-cluster correlation derived from it
    clusters: int | None = None  # clusters the estimate comes from
    notes: list[str] = field(default_factory=list)


def components(per_seed: np.ndarray, *, binary: bool = False) -> Components:
    """Components from per_seed[s, i] = A's score minus B's on item i in seed replicate s (B may be the base model,
    the same in every row)."""
    d = np.asarray(per_seed, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"need a (seeds x items) matrix with 2+ items, got shape {d.shape}")
    s0, n = d.shape
    mean_d = d.mean(axis=0)
    sd_seed_mean = float(mean_d.std(ddof=1))
    notes = []
    if s0 >= 2:
        # two-way layout without replication (seeds x items): the residual after removing each seed's and each
        # item's mean is the item x seed noise; var over seeds of one item would also hold the seed shifts
        resid = d - d.mean(axis=1, keepdims=True) - mean_d[None, :] + d.mean()
        item_seed_var = float(np.sum(resid**2) / ((s0 - 1) * (n - 1)))
        seed_var = max(0.0, float(d.mean(axis=1).var(ddof=1)) - item_seed_var / n)
    else:
        item_seed_var = seed_var = 0.0
        notes.append("one seed: no seed term could be estimated (0 assumed)")
    sd_item = math.sqrt(max(0.0, sd_seed_mean**2 - item_seed_var / s0))
    return Components(n=n, seeds=s0, sd_item=sd_item, item_seed_var=item_seed_var, seed_var=seed_var,
                      sd_seed_mean=sd_seed_mean, binary=binary, notes=notes)


def cluster_design_effect(d: Sequence[float], clusters: Sequence[str]) -> tuple[float, float, int]:
    """(observed design effect, intra-cluster correlation rho, clusters) of the mean of per-item differences d.

    deff = (cluster-robust se / iid se)^2, the se's of evals/stats.paired_comparison; rho from
    deff = 1 + (m_eff - 1) rho with m_eff = sum m_g^2 / n (unequal cluster sizes), clipped to [0, 1]."""
    x = np.asarray(d, dtype=np.float64)
    labels = sorted(set(clusters))
    g, n = len(labels), x.size
    if g < 2 or g >= n:
        return 1.0, 0.0, g
    idx = {lab: i for i, lab in enumerate(labels)}
    sums, sizes = np.zeros(g), np.zeros(g)
    for v, c in zip(x, clusters):
        sums[idx[c]] += v
        sizes[idx[c]] += 1
    resid = sums - x.mean() * sizes
    se_cluster = math.sqrt(g / (g - 1) * float(np.sum(resid**2))) / n
    se_iid = float(x.std(ddof=1)) / math.sqrt(n)
    if se_iid == 0.0:
        return 1.0, 0.0, g
    deff = (se_cluster / se_iid) ** 2
    m_eff = float(np.sum(sizes**2)) / n
    rho = 0.0 if m_eff <= 1.0 else min(1.0, max(0.0, (deff - 1.0) / (m_eff - 1.0)))
    return deff, rho, g


def projected_deff(rho: float, n: int, clusters: int | Sequence[int] | None) -> float:
    """1 + (m_eff - 1) rho for n items drawn from the clusters (1 when items are independent).

    clusters: the sizes of the test split's clusters (then a seeded subset of n of its N items has expected sizes
    m_g n / N, so m_eff = (n / N^2) sum m_g^2: unequal passages count), or only their number G (then n/G, equal
    sizes assumed, at least 1)."""
    if not clusters or rho == 0.0:
        return 1.0
    if isinstance(clusters, int):
        m_eff = n / min(n, clusters)
    else:
        total = sum(clusters)
        m_eff = max(1.0, n * sum(m * m for m in clusters) / total**2)
    return 1.0 + (m_eff - 1.0) * rho


# --------------------------------------------------------------------------------------------------------------
# reading result folders
# --------------------------------------------------------------------------------------------------------------
@dataclass
class CellItems:
    method: str
    seed: int
    path: Path
    doc: dict
    items: list[dict]

    def task(self, task: str, metric: str) -> tuple[dict[str, float], dict[str, str]]:
        f = ITEM_FIELD[metric]
        recs = [it for it in self.items if it["kind"] == "task" and it.get("task") == task]
        missing = [it["id"] for it in recs if f not in it]
        if missing:
            raise ValueError(f"{self.path}: task {task} items lack {f!r} (e.g. {missing[0]}): run "
                             f"python -m repro rescore {self.path.parent} --data-dir DATA")
        return ({it["id"]: float(it[f]) for it in recs},
                {it["id"]: it["cluster"] for it in recs if "cluster" in it})

    def bench(self, name: str) -> dict[str, float]:
        metric = self.doc["generalization"]["primary_metric"][name].split(",")[0]
        return {str(it.get("key", it.get("doc_id"))): float(it[metric]) for it in self.items
                if it["kind"] == "benchmark" and it["benchmark"] == name}


def load_cells(results: Path, preset: str, task: str) -> dict[str, list[CellItems]]:
    """method -> its cells (one per seed, in seed order) under <results>/<preset>/<task>/."""
    root = Path(results) / preset / task
    out: dict[str, list[CellItems]] = {}
    for path in sorted(root.glob("*/seed*/result.json")):
        doc = json.loads(path.read_text())
        with gzip.open(path.parent / doc["items"]["path"], "rt", encoding="utf-8") as f:
            items = [json.loads(line) for line in f if line.strip()]
        c = doc["cell"]
        out.setdefault(c["method"], []).append(CellItems(c["method"], int(c["seed"]), path, doc, items))
    for cells in out.values():
        cells.sort(key=lambda c: c.seed)
    if not out:
        raise FileNotFoundError(f"no result.json under {root}/<method>/seed<k>/")
    return out


def _per_seed_matrix(a: list[dict[str, float]], b: list[dict[str, float]]) -> tuple[np.ndarray, list[str]]:
    """Rows: seed replicates, A's seed s minus B's seed s (B's only replicate when it has one, e.g. the base model);
    columns: the items every replicate of both has."""
    keys = set(a[0])
    for d in a[1:] + b:
        keys &= set(d)
    keys = sorted(keys)
    rows = max(len(a), len(b))
    mat = np.array([[a[min(s, len(a) - 1)][k] - b[min(s, len(b) - 1)][k] for k in keys] for s in range(rows)])
    return mat, keys


def in_domain_components(cells: Mapping[str, list[CellItems]], task: str, a: str, b: str,
                         metric: str) -> Components:
    sa = [c.task(task, metric) for c in cells[a]]
    sb = [c.task(task, metric) for c in cells[b]]
    mat, keys = _per_seed_matrix([s[0] for s in sa], [s[0] for s in sb])
    comp = components(mat, binary=metric in BINARY_METRICS)
    clusters = {**sb[0][1], **sa[0][1]}
    if clusters and all(k in clusters for k in keys):
        comp.deff, comp.rho, comp.clusters = cluster_design_effect(mat.mean(axis=0), [clusters[k] for k in keys])
    return comp


def benchmark_components(cells: Mapping[str, list[CellItems]], benches: Sequence[str], a: str,
                         b: str) -> tuple[dict[str, Components], float, list[str]]:
    """Per-benchmark components and the between-seed variance of the average over benchmarks."""
    per, mats, notes = {}, {}, []
    for name in benches:
        mat, _ = _per_seed_matrix([c.bench(name) for c in cells[a]], [c.bench(name) for c in cells[b]])
        values = [v for m in (a, b) for c in cells[m] for v in c.bench(name).values()]
        binary = all(v in (0.0, 1.0) for v in values)     # 0/1 accuracy vs TruthfulQA's continuous mc2
        per[name] = components(mat, binary=binary)
        mats[name] = mat
    s0 = min(m.shape[0] for m in mats.values())
    k = len(benches)
    if s0 >= 2:
        avg_by_seed = np.mean([mats[nm][:s0].mean(axis=1) for nm in benches], axis=0)
        within = sum(per[nm].item_seed_var / per[nm].n for nm in benches) / (k * k)
        seed_var = max(0.0, float(avg_by_seed.var(ddof=1)) - within)
    else:
        seed_var = 0.0
        notes.append("one seed: no seed term could be estimated for the average (0 assumed)")
    return per, seed_var, notes


def benchmark_sizes(data_dir: Path | None, names: Sequence[str]) -> dict[str, int]:
    """Items in each benchmark's full evaluation file (its first data file: rows, one JSON per line)."""

    out = {}
    for name in names:
        if data_dir is None or name not in BENCHMARKS:
            continue
        path = Path(data_dir) / BENCHMARKS[name].data_files[0]
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                out[name] = sum(1 for line in f if line.strip())
    return out


def test_clusters(task: str, data_dir: Path | None) -> list[int] | None:
    """Sizes of the clusters (passages) of the task's whole test split, when the task has clusters and the data is
    here."""
    if data_dir is None:
        return None

    t = get_task(task)
    try:
        exs = t.load_split("test", data_dir).examples
    except (DataError, OSError):   # no local data for this task: the caller falls back to --test-clusters
        return None

    sizes = Counter(t.cluster(ex) for ex in exs)
    sizes.pop(None, None)
    return sorted(sizes.values(), reverse=True) or None


# --------------------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------------------
def _pts(x: float, scale: float) -> str:
    return "inf" if not math.isfinite(x) else f"{scale * x:.2f}"


def doubled(c: Components) -> Components:
    """The components of a difference between two tuned models, from one tuned model vs the base (a pilot that ran
    only base and SFT): if each tuned model departs from the base independently, every variance of the difference
    doubles. Tuned models trained on the same data depart in correlated ways, so this overstates the variance: an
    MDE from it is conservative."""
    return Components(n=c.n, seeds=c.seeds, sd_item=c.sd_item * math.sqrt(2), item_seed_var=2 * c.item_seed_var,
                      seed_var=2 * c.seed_var, sd_seed_mean=c.sd_seed_mean * math.sqrt(2), binary=c.binary,
                      deff=c.deff, rho=c.rho, clusters=c.clusters, notes=c.notes)


def _sizes(spec: str, benches: Sequence[str], full_sizes: Mapping[str, int]) -> list[int] | None:
    """Items per benchmark from one --n-bench entry: N (each benchmark, capped at its size), 'all', or one value per
    benchmark joined by '/' in the benchmarks' order (e.g. 570/all/300/all). None when 'all' is asked for a benchmark
    whose size is unknown (no data here)."""
    vals = spec.split("/") if "/" in spec else [spec] * len(benches)
    if len(vals) != len(benches):
        raise ValueError(f"--n-bench {spec!r}: {len(vals)} sizes for {len(benches)} benchmarks {list(benches)}")
    out = []
    for v, nm in zip(vals, benches):
        if v == "all":
            if nm not in full_sizes:
                return None
            out.append(full_sizes[nm])
        else:
            out.append(min(int(v), full_sizes.get(nm, int(v))))
    return out


def power_report(cells: Mapping[str, list[CellItems]], *, task: str, a: str, b: str, metric: str,
                 benches: Sequence[str], n_test: Sequence[int], n_bench: Sequence[int | str], seeds: Sequence[int],
                 full_sizes: Mapping[str, int], clusters_total: int | Sequence[int] | None, source: str,
                 proxy_pair: bool = False) -> str:

    for m in (a, b):
        if m not in cells:
            raise ValueError(f"no cells of method {m!r} for task {task} (have {sorted(cells)})")
    lines = [f"# Power: {a} vs {b} ({source})", "",
             f"MDE at 80% power, two-sided alpha 0.05: Z_POWER * se, Z_POWER = {Z_POWER:.3f} (evals/stats.py); "
             "variance components estimated from the cells below (repro/report/power.py explains the model). "
             "Points = 100 x the score difference.", ""]
    comp = in_domain_components(cells, task, a, b, metric)
    if proxy_pair:
        comp = doubled(comp)
        lines += [f"Proxy: every variance below is twice that of {a} - {b} (two tuned methods, each departing from "
                  f"the base independently: conservative; repro/report/power.py doubled()).", ""]
    # without the data dir the test split's passages are unknown: project over the passages the data has
    clusters = clusters_total or comp.clusters
    lines += [f"## (a) In-domain {task} {metric}: {a} - {b}", "",
              f"Estimated from n = {comp.n} items, {comp.seeds} seed replicate(s) of {a} and "
              f"{len(cells[b])} of {b}: sd of seed-mean item differences {comp.sd_seed_mean * 100:.1f} pts; "
              f"seed-independent item sd {comp.sd_item * 100:.1f}; item x seed variance "
              f"{comp.item_seed_var * 1e4:.1f} pts^2; between-seed variance {comp.seed_var * 1e4:.2f} pts^2"
              + (f"; clustered in {comp.clusters} passages: observed design effect {comp.deff:.2f}, "
                 f"intra-passage correlation rho {comp.rho:.3f}, projected over "
                 + (f"{clusters} passages (equal sizes assumed)" if isinstance(clusters, int) else
                    f"the test split's {len(clusters)} passages of {min(clusters)}-{max(clusters)} "
                    f"questions ({sum(clusters)} in all)")
                 if comp.clusters else "") + ".", *[f"Note: {n}." for n in comp.notes], ""]
    head = "| test items | " + " | ".join(f"{s} seed{'s' if s > 1 else ''}" for s in seeds) + " |"
    lines += [head, "|---|" + "---|" * len(seeds)]
    for n in n_test:
        deff = projected_deff(comp.rho, n, clusters) if comp.clusters else 1.0
        row = [_pts(mde(comp.sd_item, n, seeds=s, seed_var=comp.seed_var, item_seed_var=comp.item_seed_var,
                        deff=deff, binary=comp.binary), 100.0) for s in seeds]
        lines.append(f"| {n}" + (f" (deff {deff:.1f})" if comp.clusters else "") + " | " + " | ".join(row) + " |")
    lines.append("")
    if benches:
        per, seed_var, notes = benchmark_components(cells, benches, a, b)
        if proxy_pair:
            per, seed_var = {nm: doubled(c) for nm, c in per.items()}, 2 * seed_var
        lines += [f"## (b) Paper-four average drop: {a} - {b} (mean over {', '.join(benches)})", "",
                  "Per benchmark (estimated from n items; sd of seed-mean item differences / seed-independent "
                  "item sd / item x seed variance): " + "; ".join(
                      f"{nm} n={c.n}{' (0/1)' if c.binary else ''}: {c.sd_seed_mean * 100:.1f} / "
                      f"{c.sd_item * 100:.1f} pts / {c.item_seed_var * 1e4:.1f} pts^2"
                      + (f", full {full_sizes[nm]}" if nm in full_sizes else "") for nm, c in per.items())
                  + f". Between-seed variance of the average {seed_var * 1e4:.3f} pts^2.",
                  *[f"Note: {n}." for n in notes], ""]
        lines += ["| items per benchmark | " + " | ".join(f"{s} seed{'s' if s > 1 else ''}" for s in seeds) + " |",
                  "|---|" + "---|" * len(seeds)]
        for nb in n_bench:
            sizes = _sizes(str(nb), benches, full_sizes)
            if sizes is None:
                continue
            parts = [{"sd_item": per[nm].sd_item, "item_seed_var": per[nm].item_seed_var, "binary": per[nm].binary}
                     for nm in benches]
            row = [_pts(mde_average(parts, sizes, seeds=s, seed_var=seed_var), 100.0) for s in seeds]
            label = f"{nb} ({'/'.join(str(x) for x in sizes)})"
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--results", default="results", help="results root (default: results, the committed ones; "
                                                         "a pilot's --results-dir works too)")
    sp.add_argument("--preset", default="mini", help="preset folder under --results (default: mini)")
    sp.add_argument("--task", default="squad", help="in-domain task (default: squad)")
    sp.add_argument("--a", default="s3ft", help="method A (default: s3ft)")
    sp.add_argument("--b", default="sft", help="method B (default: sft; base works: it has no seed)")
    sp.add_argument("--metric", choices=sorted(ITEM_FIELD), help="in-domain metric (default: the cells' headline)")
    sp.add_argument("--benchmarks", nargs="*", help="benchmarks averaged in (b) (default: the cells' headline four)")
    sp.add_argument("--n-test", nargs="+", type=int, default=[100, 200, 300, 536], help="test sizes to tabulate")
    sp.add_argument("--n-bench", nargs="+", default=["100", "250", "500", "all"],
                    help="items per benchmark to tabulate (capped at each benchmark's size; 'all' = every item; "
                         "or one size per benchmark joined by '/', in the --benchmarks order, e.g. 570/all/300/all)")
    sp.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seed counts to tabulate")
    sp.add_argument("--test-clusters", type=int,
                    help="clusters (passages) the design's test items come from (default: the task's whole test "
                         "split, from --data-dir)")
    sp.add_argument("--data-dir", default=None, help="benchmark data (default: $S3FT_DATA_DIR): full sizes, clusters")
    sp.add_argument("--proxy-tuned-pair", action="store_true",
                    help="treat A - B (a tuned model vs the base) as a proxy for two tuned models: doubles every "
                         "variance (conservative), for a pilot that ran only base and SFT")
    sp.add_argument("--out", help="also write the markdown table here")


def main(args: argparse.Namespace) -> int:
    cells = load_cells(Path(args.results), args.preset, args.task)
    any_cell = next(iter(cells.values()))[0].doc
    metric = args.metric or any_cell["in_domain"].get("headline_metric", "acc")
    benches = args.benchmarks
    if benches is None:
        ev = any_cell["provenance"].get("recipe", {}).get("evaluation", {})
        benches = ev.get("headline_benchmarks") or [n for n in ("mmlu", "truthfulqa_mc2", "hellaswag", "winogrande")
                                                    if n in (any_cell.get("generalization") or {}).get(
                                                        "primary_metric", {})]
    try:
        data_dir = resolve_data_dir(args.data_dir)
    except DataError as e:     # a named folder that is not there: say so, and go on without sizes and clusters
        print(f"warning: {e}; benchmark sizes ('all') and the test split's passages are unknown", file=sys.stderr)
        data_dir = None
    full = benchmark_sizes(data_dir, benches)
    clusters = args.test_clusters or test_clusters(args.task, data_dir)
    text = power_report(cells, task=args.task, a=args.a, b=args.b, metric=metric, benches=benches,
                        n_test=args.n_test, n_bench=args.n_bench, seeds=args.seeds, full_sizes=full,
                        clusters_total=clusters, source=f"{args.results}/{args.preset}/{args.task}",
                        proxy_pair=args.proxy_tuned_pair)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0

"""Uncertainty for every number the suite reports.

Fine-tuning methods are compared on the *same* test items, and the differences
we care about ("S3FT forgets less than SFT") are often a few points.  This
module gives each score a standard error and a confidence interval, and each
comparison a p-value, with paired tests wherever two systems were scored on the
same items (pairing removes item-difficulty variance, which usually dominates).

Sign convention for "drop" (used throughout this module)
---------------------------------------------------------
    drop = tuned_score - base_score

A NEGATIVE drop means the tuned model got WORSE than the base model on that
benchmark (forgetting); a positive drop means it improved.  "Average drop" is
the unweighted mean of per-benchmark drops.  When comparing two methods,
``avg_drop_A - avg_drop_B > 0`` means A forgets LESS than B.

All public functions return plain Python ``float`` / ``int`` / ``list`` /
``dict`` values (json-serialisable) and are deterministic for a given ``seed``.
Only numpy and scipy are used.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as _sps

__all__ = [
    "mean_stderr",
    "bootstrap_ci",
    "accuracy_summary",
    "paired_bootstrap",
    "mcnemar",
    "drop",
    "drop_with_uncertainty",
    "average_drop",
    "compare_average_drops",
    "aggregate_seeds",
    "seed_means",
    "paired_comparison",
    "paired_average_comparison",
    "verdict",
    "Z_POWER",
    "K_MIN",
]

# Largest number of bootstrap indices materialised at once.  2**21 int64
# indices (16 MiB) plus the gathered float64 values (16 MiB) keeps memory flat
# even for 10k resamples x 10k items (which would be 800 MB in one go), while
# chunks stay large enough that the Python loop overhead is negligible.
_MAX_CHUNK_ELEMS = 2**21

# Below this many discordant pairs McNemar's chi-square approximation is poor,
# so the exact binomial test is used by default (common rule of thumb).
_MCNEMAR_EXACT_BELOW = 25


# --------------------------------------------------------------------------
# input validation helpers
# --------------------------------------------------------------------------
def _as_1d(values: Any, name: str = "values") -> np.ndarray:
    """Return ``values`` as a non-empty, finite, 1-D float64 array or raise ValueError."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; need at least one item")
    if not np.all(np.isfinite(arr)):
        # A NaN would silently poison every mean and quantile downstream.
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_pair(a: Any, b: Any, name_a: str = "a", name_b: str = "b") -> tuple[np.ndarray, np.ndarray]:
    """Validate two aligned per-item score vectors (same length, same items)."""
    x = _as_1d(a, name_a)
    y = _as_1d(b, name_b)
    if x.size != y.size:
        raise ValueError(
            f"{name_a} and {name_b} must be scored on the same items in the same order: "
            f"got lengths {x.size} and {y.size}"
        )
    return x, y


def _as_bool(values: Any, name: str) -> np.ndarray:
    """Validate per-item correctness flags (bools or 0/1) and return a bool array."""
    arr = _as_1d(values, name)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only booleans or 0/1 values")
    return arr.astype(bool)


def _check_boot_args(n_resamples: int, alpha: float) -> None:
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


# --------------------------------------------------------------------------
# bootstrap engine
# --------------------------------------------------------------------------
def _bootstrap_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Return an array of ``n_resamples`` means of with-replacement resamples of ``x``.

    Indices are drawn as a (chunk, n) matrix so the work is vectorised; chunking
    bounds memory.  The chunk size depends only on ``len(x)``, so a given seed
    always consumes the random stream identically (determinism).
    """
    n = x.size
    out = np.empty(int(n_resamples), dtype=np.float64)
    if n == 1 or np.all(x == x[0]):
        # Every resample of a constant vector has exactly that mean; skipping the
        # draw avoids float round-off (e.g. mean of 0.1s != 0.1) in degenerate CIs.
        out.fill(x[0])
        return out
    chunk = max(1, _MAX_CHUNK_ELEMS // n)
    for start in range(0, out.size, chunk):
        stop = min(start + chunk, out.size)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def _percentile_ci(boot: np.ndarray, alpha: float) -> list[float]:
    """Percentile interval [alpha/2, 1-alpha/2] of a bootstrap distribution."""
    lo, hi = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return [float(lo), float(hi)]


def _bootstrap_p_value(boot: np.ndarray) -> float:
    """Two-sided bootstrap p-value for H0: statistic == 0.

    ``2 * min(P(d* <= 0), P(d* >= 0))`` with the +1 correction
    ``(count + 1) / (B + 1)`` so that a finite number of resamples never yields
    p = 0 (the smallest reportable p is about 2/(B+1)).  This is the "how often
    does the bootstrap distribution cross zero" test, consistent with the
    percentile CI: p < alpha roughly iff the (1-alpha) CI excludes 0.
    Identical systems (all d* == 0) give p = 1.
    """
    b = boot.size
    le = (np.count_nonzero(boot <= 0.0) + 1) / (b + 1)
    ge = (np.count_nonzero(boot >= 0.0) + 1) / (b + 1)
    return float(min(1.0, 2.0 * min(le, ge)))


# --------------------------------------------------------------------------
# single-system summaries
# --------------------------------------------------------------------------
def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Return ``(mean, standard error of the mean)`` of per-item scores.

    The standard error is ``std(values, ddof=1) / sqrt(n)`` (as in lm-eval's
    ``mean_stderr``); it is 0.0 when n < 2, since one item says nothing about
    spread.  Works for 0/1 correctness and for float per-item scores.
    """
    x = _as_1d(values)
    n = x.size
    mean = float(x.mean())
    if n < 2:
        return mean, 0.0
    return mean, float(x.std(ddof=1) / math.sqrt(n))


def bootstrap_ci(
    values: Sequence[float],
    *,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Return the percentile-bootstrap ``(lo, hi)`` (1-alpha) confidence interval of the mean.

    A constant input gives the degenerate interval ``(c, c)``.
    """
    _check_boot_args(n_resamples, alpha)
    x = _as_1d(values)
    boot = _bootstrap_means(x, n_resamples, np.random.default_rng(seed))
    lo, hi = _percentile_ci(boot, alpha)
    return lo, hi


def accuracy_summary(
    correct: Sequence[bool | int],
    *,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Summarise per-item correctness flags.

    Returns ``{"acc": float, "acc_stderr": float, "ci95": [lo, hi], "n": int}``
    (lm-eval-style key names; ``ci95`` is the percentile bootstrap interval at
    level 1-alpha, 95% by default).
    """
    x = _as_bool(correct, "correct").astype(np.float64)
    acc, se = mean_stderr(x)
    lo, hi = bootstrap_ci(x, n_resamples=n_resamples, alpha=alpha, seed=seed)
    return {"acc": acc, "acc_stderr": se, "ci95": [lo, hi], "n": int(x.size)}


# --------------------------------------------------------------------------
# paired comparisons of two systems on the same items
# --------------------------------------------------------------------------
def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap of ``mean(a) - mean(b)`` over shared items.

    ``a`` and ``b`` are per-item scores of two systems on the SAME items in the
    same order.  Items (not systems) are resampled, so the correlation between
    the systems (shared item difficulty) cancels, which is what makes small
    differences detectable.

    Returns ``{"diff": mean(a)-mean(b), "ci95": [lo, hi], "p_value": float, "n": int}``
    where ``p_value`` is the two-sided bootstrap p-value
    ``2*min(P(d*<=0), P(d*>=0))`` with the +1 correction (see ``_bootstrap_p_value``).
    """
    _check_boot_args(n_resamples, alpha)
    x, y = _as_pair(a, b)
    d = x - y
    boot = _bootstrap_means(d, n_resamples, np.random.default_rng(seed))
    return {
        "diff": float(d.mean()),
        "ci95": _percentile_ci(boot, alpha),
        "p_value": _bootstrap_p_value(boot),
        "n": int(d.size),
    }


def mcnemar(
    a: Sequence[bool | int],
    b: Sequence[bool | int],
    *,
    exact: bool | None = None,
) -> dict[str, Any]:
    """McNemar's test for two systems' correctness on the same items.

    Only discordant items carry information: ``n01`` = a wrong & b right,
    ``n10`` = a right & b wrong.  With ``exact=True``, or ``exact=None`` and
    ``n01 + n10 < 25``, an exact two-sided binomial test (p=0.5 over the
    discordant items) is used and ``statistic`` is ``min(n01, n10)``.
    Otherwise the chi-square test with continuity correction is used:
    ``statistic = max(0, |n01 - n10| - 1)**2 / (n01 + n10)`` on 1 d.o.f. (the
    ``max(0, .)`` keeps n01 == n10 at statistic 0 / p 1 instead of the
    correction over-shooting).

    Returns ``{"n01": int, "n10": int, "statistic": float, "p_value": float,
    "method": "exact" | "chi2-cc"}``.  With no discordant items p_value is 1.0.
    """
    x = _as_bool(a, "a")
    y = _as_bool(b, "b")
    if x.size != y.size:
        raise ValueError(
            f"a and b must be scored on the same items in the same order: "
            f"got lengths {x.size} and {y.size}"
        )
    n01 = int(np.count_nonzero(~x & y))
    n10 = int(np.count_nonzero(x & ~y))
    m = n01 + n10
    use_exact = (m < _MCNEMAR_EXACT_BELOW) if exact is None else bool(exact)
    method = "exact" if use_exact else "chi2-cc"
    if m == 0:
        # No discordant items: no evidence of any difference.
        return {"n01": n01, "n10": n10, "statistic": 0.0, "p_value": 1.0, "method": method}
    if use_exact:
        stat = float(min(n01, n10))
        p = float(_sps.binomtest(n01, m, 0.5, alternative="two-sided").pvalue)
    else:
        stat = float(max(0, abs(n01 - n10) - 1) ** 2 / m)
        p = float(_sps.chi2.sf(stat, df=1))
    return {"n01": n01, "n10": n10, "statistic": stat, "p_value": min(1.0, p), "method": method}


# --------------------------------------------------------------------------
# generalisation drop (tuned - base)
# --------------------------------------------------------------------------
def drop(base: float, tuned: float) -> float:
    """Return the generalisation drop ``tuned - base``.

    SIGN CONVENTION: NEGATIVE = the tuned model is WORSE than the base model
    (forgetting); positive = it improved.  E.g. base 0.60, tuned 0.55 -> -0.05.
    """
    return float(tuned) - float(base)


def drop_with_uncertainty(
    base_items: Sequence[float],
    tuned_items: Sequence[float],
    *,
    paired: bool = True,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Drop ``mean(tuned) - mean(base)`` on one benchmark, with uncertainty.

    ``base_items`` / ``tuned_items`` are per-item scores of the base and tuned
    model on the same benchmark items (same order).  Negative drop = forgetting.

    - ``paired=True`` (recommended; it is the same items): CI and p-value from
      the paired bootstrap; ``drop_stderr`` is the paired standard error
      ``std(tuned - base, ddof=1) / sqrt(n)``.
    - ``paired=False``: treats the two score vectors as independent samples:
      ``drop_stderr = sqrt(se_base**2 + se_tuned**2)``, normal-approximation CI
      and two-sided z-test p-value.  This ignores the pairing and is
      conservative when the models agree on most items.

    Returns ``{"drop", "drop_stderr", "ci95": [lo, hi], "p_value", "n", "method"}``.
    """
    _check_boot_args(n_resamples, alpha)
    base, tuned = _as_pair(base_items, tuned_items, "base_items", "tuned_items")
    n = int(base.size)
    if paired:
        res = paired_bootstrap(tuned, base, n_resamples=n_resamples, alpha=alpha, seed=seed)
        _, se = mean_stderr(tuned - base)
        return {
            "drop": res["diff"],
            "drop_stderr": se,
            "ci95": res["ci95"],
            "p_value": res["p_value"],
            "n": n,
            "method": "paired-bootstrap",
        }
    mb, seb = mean_stderr(base)
    mt, set_ = mean_stderr(tuned)
    d = mt - mb
    se = math.hypot(seb, set_)
    z = float(_sps.norm.ppf(1.0 - alpha / 2.0))
    if se > 0.0:
        p = float(2.0 * _sps.norm.sf(abs(d) / se))
    else:
        # Zero variance in both: the difference is exact.
        p = 1.0 if d == 0.0 else 0.0
    return {
        "drop": float(d),
        "drop_stderr": float(se),
        "ci95": [float(d - z * se), float(d + z * se)],
        "p_value": min(1.0, p),
        "n": n,
        "method": "independent-normal",
    }


def _stratified_avg_boot(
    diffs: Sequence[np.ndarray], n_resamples: int, seed: int
) -> np.ndarray:
    """Bootstrap distribution of the unweighted mean over strata of per-stratum means.

    Items are resampled independently within each stratum (benchmark), so each
    benchmark keeps its size and still counts exactly once in the average.
    One generator is consumed stratum by stratum in the given order (callers
    pass a sorted order), which makes the result deterministic.
    """
    rng = np.random.default_rng(seed)
    per = np.stack([_bootstrap_means(d, n_resamples, rng) for d in diffs])
    return per.mean(axis=0)


def _check_benchmarks(per_benchmark: Mapping[str, Any], what: str) -> list[str]:
    if not isinstance(per_benchmark, Mapping):
        raise ValueError(f"{what} must be a mapping of benchmark name -> items")
    if len(per_benchmark) == 0:
        raise ValueError(f"{what} is empty; need at least one benchmark")
    # Sorted order: results must not depend on dict insertion order.
    return sorted(per_benchmark)


def average_drop(
    per_benchmark: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Unweighted average drop over benchmarks, with a stratified paired bootstrap CI.

    ``per_benchmark`` maps name -> ``(base_items, tuned_items)``, aligned per
    benchmark.  The average drop is ``mean_k (mean(tuned_k) - mean(base_k))``:
    each benchmark counts once whatever its size (as in the paper's abstract).
    Negative = forgetting.

    Returns ``{"average_drop", "stderr", "ci95": [lo, hi], "p_value",
    "per_benchmark": {name: drop}, "n_items": {name: n}, "n_benchmarks"}``.
    ``stderr`` is the analytic paired standard error
    ``sqrt(sum_k se_k**2) / K`` (benchmarks are independent samples);
    ``ci95``/``p_value`` come from resampling items within each benchmark
    independently and recomputing the unweighted mean of drops.
    """
    _check_boot_args(n_resamples, alpha)
    names = _check_benchmarks(per_benchmark, "per_benchmark")
    diffs: list[np.ndarray] = []
    per: dict[str, float] = {}
    n_items: dict[str, int] = {}
    var_sum = 0.0
    for name in names:
        pair = per_benchmark[name]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"per_benchmark[{name!r}] must be a (base_items, tuned_items) pair")
        base, tuned = _as_pair(pair[0], pair[1], f"{name} base_items", f"{name} tuned_items")
        d = tuned - base
        diffs.append(d)
        m, se = mean_stderr(d)
        per[name] = m
        n_items[name] = int(d.size)
        var_sum += se * se
    k = len(names)
    boot = _stratified_avg_boot(diffs, n_resamples, seed)
    return {
        "average_drop": float(sum(per.values()) / k),
        "stderr": float(math.sqrt(var_sum) / k),
        "ci95": _percentile_ci(boot, alpha),
        "p_value": _bootstrap_p_value(boot),
        "per_benchmark": per,
        "n_items": n_items,
        "n_benchmarks": k,
    }


def compare_average_drops(
    per_benchmark_a: Mapping[str, Sequence[float]],
    per_benchmark_b: Mapping[str, Sequence[float]],
    base: Mapping[str, Sequence[float]],
    *,
    n_resamples: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Is method A's average drop different from method B's?

    Inputs map benchmark name -> per-item scores: ``per_benchmark_a`` (tuned
    model A), ``per_benchmark_b`` (tuned model B) and ``base`` (base model), all
    aligned on the same items per benchmark and with the same benchmark names.

    ``diff = average_drop_A - average_drop_B``.  POSITIVE diff means A forgets
    LESS than B (its drops are less negative).  Because all three are scored on
    the same items, the base cancels item by item and the paired stratified
    bootstrap resamples ``tuned_A - tuned_B`` within each benchmark.

    Returns ``{"diff", "ci95": [lo, hi], "p_value", "average_drop_a",
    "average_drop_b", "per_benchmark": {name: drop_a - drop_b}, "n_benchmarks"}``.
    """
    _check_boot_args(n_resamples, alpha)
    names = _check_benchmarks(base, "base")
    for label, mp in (("per_benchmark_a", per_benchmark_a), ("per_benchmark_b", per_benchmark_b)):
        _check_benchmarks(mp, label)
        if set(mp) != set(base):
            raise ValueError(
                f"{label} and base must cover the same benchmarks: "
                f"{sorted(set(mp) ^ set(base))} differ"
            )
    diffs: list[np.ndarray] = []
    per: dict[str, float] = {}
    drops_a: list[float] = []
    drops_b: list[float] = []
    for name in names:
        b = _as_1d(base[name], f"{name} base")
        ta, _ = _as_pair(per_benchmark_a[name], b, f"{name} per_benchmark_a", f"{name} base")
        tb, _ = _as_pair(per_benchmark_b[name], b, f"{name} per_benchmark_b", f"{name} base")
        drops_a.append(float(ta.mean() - b.mean()))
        drops_b.append(float(tb.mean() - b.mean()))
        # (ta - b) - (tb - b) == ta - tb exactly per item when resampled jointly.
        d = ta - tb
        diffs.append(d)
        per[name] = drops_a[-1] - drops_b[-1]
    k = len(names)
    boot = _stratified_avg_boot(diffs, n_resamples, seed)
    avg_a = sum(drops_a) / k
    avg_b = sum(drops_b) / k
    return {
        "diff": float(avg_a - avg_b),
        "ci95": _percentile_ci(boot, alpha),
        "p_value": _bootstrap_p_value(boot),
        "average_drop_a": float(avg_a),
        "average_drop_b": float(avg_b),
        "per_benchmark": per,
        "n_benchmarks": k,
    }


# --------------------------------------------------------------------------
# across training seeds
# --------------------------------------------------------------------------
def aggregate_seeds(values: Sequence[float]) -> dict[str, Any]:
    """Summarise one metric over training seeds.

    Returns ``{"mean", "std" (ddof=1; 0.0 for a single seed), "min", "max",
    "n", "values": [floats]}``.  Seed-to-seed std captures training noise,
    which item-level bootstrap CIs do not.
    """
    x = _as_1d(values)
    n = int(x.size)
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if n > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
        "n": n,
        "values": [float(v) for v in x],
    }


# --------------------------------------------------------------------------
# comparisons that respect the design: items are the unit, seeds replicate
# --------------------------------------------------------------------------
# Minimum detectable effect (MDE) at 80% power, two-sided alpha = 0.05, for a paired mean difference:
#     MDE = (z_.975 + z_.80) * se,   se = sd(per-item differences) / sqrt(n)
# (clustered items: the larger of the cluster-robust se and that per-item se, so that a clustered estimate that
# falls below the per-item one by chance never makes an MDE smaller than independent items would give)
# with a floor, so that "methods agreed on every item" (sd = 0) never reads as "any effect would have shown":
#     se >= sqrt(K_MIN) * u / n
# K_MIN = 6 is the fewest same-direction changes an exact two-sided sign test can call significant at 0.05
# (2 * 0.5**6 = 0.031; five give 0.0625), and u the smallest per-item change the scores can show: 1 / seeds for
# 0/1 scores averaged over seeds; for continuous scores no floor (u = 0) unless the differences have no spread
# at all, then the sd of the pooled per-item scores. The floor makes the MDE about
# K_MIN * u / n, the exact test's own limit. Where even K_MIN changes are impossible (fewer than K_MIN items or
# clusters), no effect is detectable at all: MDE = inf.
Z_POWER = float(_sps.norm.ppf(0.975) + _sps.norm.ppf(0.80))
K_MIN = 6
# sign-flip permutation tests are exact (every one of the 2**n flips) up to this many resamples
PERMUTATION_RESAMPLES = 2**16


def seed_means(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-item mean over the seeds a method has (seeds are replicates of training, items the sampling unit).
    Only items scored in every seed are kept, so every item mean averages the same number of seeds."""
    if not per_seed:
        raise ValueError("per_seed is empty; need at least one seed's per-item scores")
    keys = set(per_seed[0])
    for s in per_seed[1:]:
        keys &= set(s)
    return {k: float(sum(float(s[k]) for s in per_seed) / len(per_seed)) for k in sorted(keys)}


def _resolution(x: np.ndarray, y: np.ndarray, binary_seeds: int | None, sd_diff: float) -> float:
    """The per-item unit of the MDE floor: one seed's flip of a 0/1 score; for continuous scores no floor unless
    the differences have no spread at all (then the spread of the scores themselves)."""
    if binary_seeds:
        return 1.0 / binary_seeds
    return 0.0 if sd_diff > 0.0 else float(np.concatenate([x, y]).std())


def _boot_ci(data: tuple, statistic, *, paired: bool, alpha: float, n_resamples: int, seed: int) -> list[float]:
    """Percentile bootstrap CI via scipy.stats.bootstrap; a degenerate (constant) sample gives [stat, stat]."""
    point = float(statistic(*data, axis=-1))
    if all(np.all(d == d[0]) for d in data):
        return [point, point]
    res = _sps.bootstrap(data, statistic, paired=paired, vectorized=True, confidence_level=1.0 - alpha,
                         n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return [point, point]
    return [lo, hi]


def _sign_flip_null(units: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The null distribution scipy.stats.permutation_test(permutation_type="samples") draws for one sample, value
    for value, streamed in chunks of at most _MAX_CHUNK_ELEMS flips instead of materialised at once.

    scipy flips each item's sign with Generator.permuted on a length-2 row, which consumes one 32-bit draw per item
    (bit 1: keep the sign) in row-major order, and sums each resample over items left to right. Drawing the same
    32-bit words in the same order and summing an (items, resamples) array down its first axis reproduces its null
    distribution bit for bit (tests/test_stats.py compares the two), at a fraction of the time and memory: scipy
    builds all resamples at once (11.8 GiB peak RSS measured for 65,536 flips of 3,000 items: benchmarks/stats.py)."""
    n = units.size
    out = np.empty(int(n_resamples), dtype=np.float64)
    chunk = max(1, _MAX_CHUNK_ELEMS // max(n, 1))
    # Items with a zero unit add +-0.0, which leaves every partial sum as it is: their draws are consumed (the
    # stream stays scipy's) but they are left out of the sums. Paired 0/1 scores agree on most items, so this
    # drops most of the work (paper_tables.py --preset smollm2-reading: 214 s -> 97 s, loaded cores, same bytes).
    nonzero = np.flatnonzero(units)
    column = units[nonzero][:, None]
    for start in range(0, out.size, chunk):
        stop = min(start + chunk, out.size)
        words = rng.integers(0, 2**32, size=(stop - start, n), dtype=np.uint32)
        signs = (words.T[nonzero] & 1).astype(np.float64)      # (nonzero items, resamples)
        signs *= 2.0
        signs -= 1.0
        signs *= column                     # +-1 times a unit is exactly +-unit
        out[start:stop] = signs.sum(axis=0)
    return out


def _sign_flip_p(units: np.ndarray, seed: int) -> float:
    """Two-sided sign-flip permutation p of sum(units) = 0, as scipy.stats.permutation_test computes it: exact
    (every one of the 2**n flips, through scipy) when 2**len(units) <= PERMUTATION_RESAMPLES, else
    PERMUTATION_RESAMPLES random flips (the same draws and sums as scipy, see :func:`_sign_flip_null`) with
    scipy's +1 adjustment and its tolerance for ties. All-zero units give exactly 1."""
    if np.all(units == 0.0):
        return 1.0
    statistic = lambda x, axis: np.sum(x, axis=axis)  # noqa: E731
    if 2 ** int(units.size) <= PERMUTATION_RESAMPLES:
        res = _sps.permutation_test((units,), statistic, permutation_type="samples", vectorized=True,
                                    n_resamples=PERMUTATION_RESAMPLES, alternative="two-sided",
                                    random_state=np.random.default_rng(seed))
        return float(min(1.0, res.pvalue))
    observed = float(statistic(units, axis=-1))
    null = _sign_flip_null(units, PERMUTATION_RESAMPLES, np.random.default_rng(seed))
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)        # scipy's tolerance: ties within it count
    less = (np.count_nonzero(null <= observed + gamma) + 1) / (PERMUTATION_RESAMPLES + 1)
    greater = (np.count_nonzero(null >= observed - gamma) + 1) / (PERMUTATION_RESAMPLES + 1)
    return float(min(1.0, 2 * min(less, greater)))


def paired_comparison(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    binary_seeds: tuple[int, int] | None = None,
    clusters: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    n_resamples: int = 9_999,
    seed: int = 0,
) -> dict[str, Any]:
    """``mean(a) - mean(b)`` over the items both have (per-item scores, seed-averaged already).

    Test, chosen by the design:
      - 0/1 scores of one seed each (``binary_seeds == (1, 1)``), items independent: exact McNemar (binomial test
        on the discordant pairs, scipy.stats.binomtest);
      - items sharing a cluster (``clusters``: item -> passage, some passage with several items): sign-flip
        permutation of the per-cluster summed differences, CI from a cluster bootstrap (clusters resampled);
      - otherwise (continuous scores, seed means): sign-flip permutation of the per-item differences
        (scipy.stats.permutation_test, exact up to 16 items), CI from a percentile bootstrap over items.
    ``binary_seeds`` = (seeds of a, seeds of b) when the per-seed scores are 0/1 (sets the MDE's resolution).
    A comparison of a system with an exact copy of itself gives diff 0, CI [0, 0] and p = 1.

    Returns {"n", "n_clusters", "diff", "ci95", "p_value", "mde", "sd_diff", "mean_a", "mean_b", "test"}.
    """
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError("a and b share no items: nothing to compare")
    x = np.array([float(a[k]) for k in keys])
    y = np.array([float(b[k]) for k in keys])
    d = x - y
    n = int(d.size)
    diff = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    single_binary = binary_seeds is not None and tuple(binary_seeds) == (1, 1)
    u = _resolution(x, y, max(binary_seeds) if binary_seeds else None, sd)
    groups = None
    if clusters is not None:
        missing = [k for k in keys if k not in clusters]
        if missing:
            raise ValueError(f"clusters has no entry for items {missing[:5]}")
        labels = sorted({clusters[k] for k in keys})
        if len(labels) < n:
            groups = labels
    if groups is not None:
        index = {lab: i for i, lab in enumerate(groups)}
        sums, sizes = np.zeros(len(groups)), np.zeros(len(groups))
        for k, dk in zip(keys, d):
            sums[index[clusters[k]]] += dk
            sizes[index[clusters[k]]] += 1
        units = sums
        ci = _boot_ci((sums, sizes), lambda s, m, axis: np.sum(s, axis=axis) / np.sum(m, axis=axis), paired=True,
                      alpha=alpha, n_resamples=n_resamples, seed=seed)
        p = _sign_flip_p(sums / n, seed)
        g = len(groups)
        resid = sums - diff * sizes            # cluster-robust (ratio estimator) standard error
        se_cluster = float(math.sqrt(g / (g - 1) * np.sum(resid**2)) / n) if g > 1 else 0.0
        # The MDE takes the larger of the clustered and the per-item se: with few clusters (25 passages) the
        # clustered estimate can fall below the per-item one by chance, which would claim a precision that
        # clustering cannot give (a design effect below 1).
        se = max(se_cluster, sd / math.sqrt(n))
        test = f"cluster sign-flip permutation ({g} passages), cluster bootstrap CI"
    else:
        units = d
        ci = _boot_ci((d,), lambda v, axis: np.mean(v, axis=axis), paired=False, alpha=alpha,
                      n_resamples=n_resamples, seed=seed)
        se = sd / math.sqrt(n)
        if single_binary:
            p = mcnemar(x, y, exact=True)["p_value"]
            test = "exact McNemar, bootstrap CI"
        else:
            p = _sign_flip_p(d / n, seed)
            test = "sign-flip permutation" + (" (exact)" if 2**n <= PERMUTATION_RESAMPLES else "") + ", bootstrap CI"
    floor = math.sqrt(K_MIN) * u / n
    mde = math.inf if units.size < K_MIN else Z_POWER * max(se, floor)
    if diff == 0.0 and np.all(d == 0.0):
        ci, p = [0.0, 0.0], 1.0
    return {"n": n, "n_clusters": int(units.size), "diff": diff, "ci95": [float(ci[0]), float(ci[1])],
            "p_value": float(p), "mde": float(mde), "sd_diff": sd, "mean_a": float(x.mean()),
            "mean_b": float(y.mean()), "test": test}


def paired_average_comparison(
    per_benchmark: Mapping[str, tuple[Mapping[str, float], Mapping[str, float], int | None]],
    *,
    alpha: float = 0.05,
    n_resamples: int = 9_999,
    seed: int = 0,
) -> dict[str, Any]:
    """Unweighted mean over benchmarks of ``mean(a_k) - mean(b_k)`` (each benchmark counts once, as in the
    paper's average drop), paired per item.

    ``per_benchmark`` maps name -> (a items, b items, binary seeds or None). The statistic is a weighted sum of
    per-item differences (weight 1 / (K n_k)); p from a sign-flip permutation of those weighted differences
    (scipy.stats.permutation_test), CI from a bootstrap that resamples items within each benchmark
    (scipy.stats.bootstrap over K independent samples), MDE from the stratified standard error
    ``sqrt(sum_k se_k**2) / K``, the se of 0/1 benchmarks floored as in :func:`paired_comparison` (continuous
    ones unfloored unless no benchmark has any spread).
    Returns {"diff", "ci95", "p_value", "mde", "n", "n_items", "per_benchmark", "test"}.
    """
    names = _check_benchmarks(per_benchmark, "per_benchmark")
    k = len(names)
    diffs, per, n_items, var, floors = [], {}, {}, 0.0, []
    for name in names:
        a, b, bs = per_benchmark[name]
        keys = sorted(set(a) & set(b))
        if not keys:
            raise ValueError(f"benchmark {name}: the two sides share no items")
        x = np.array([float(a[key]) for key in keys])
        y = np.array([float(b[key]) for key in keys])
        d = x - y
        nk = d.size
        sd = float(d.std(ddof=1)) if nk > 1 else 0.0
        # continuous benchmarks get no floor here (the 0/1 benchmarks of the average set it); see below
        u = 1.0 / bs if bs else 0.0
        se = max(sd / math.sqrt(nk), math.sqrt(K_MIN) * u / nk)
        var += se * se
        floors.append(float(np.concatenate([x, y]).std()) / nk)
        diffs.append(d)
        per[name] = float(d.mean())
        n_items[name] = int(nk)
    diff = float(sum(per.values()) / k)
    weighted = np.concatenate([d / (k * d.size) for d in diffs])
    total = int(weighted.size)
    if np.all(weighted == 0.0):
        ci, p = [0.0, 0.0], 1.0
    else:
        ci = _boot_ci(tuple(diffs), lambda *xs, axis: np.mean([np.mean(v, axis=axis) for v in xs], axis=0),
                      paired=False, alpha=alpha, n_resamples=n_resamples, seed=seed)
        p = _sign_flip_p(weighted, seed)
    if var == 0.0:   # only continuous benchmarks, no spread in any difference: floor at the scores' own spread
        var = K_MIN * sum(f * f for f in floors)
    mde = math.inf if total < K_MIN else Z_POWER * math.sqrt(var) / k
    return {"diff": diff, "ci95": [float(ci[0]), float(ci[1])], "p_value": float(p), "mde": float(mde),
            "n": total, "n_items": n_items, "per_benchmark": per,
            "test": "sign-flip permutation over items (weighted by 1/(K n_k)), stratified bootstrap CI"}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order: with the m p-values sorted ascending,
    p_adj(i) = max over j <= i of min(1, (m - j + 1) p(j)). Rejecting where p_adj < alpha controls the
    family-wise error rate at alpha under any dependence between the tests. Ties keep their input order."""
    p = [float(x) for x in p_values]
    if any(not 0.0 <= x <= 1.0 for x in p):
        raise ValueError(f"p-values must lie in [0, 1], got {p}")
    m = len(p)
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: p[k])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def verdict(diff: float, p: float, mde: float, *, better: str, worse: str, unit: str = "points",
            scale: float = 100.0, alpha: float = 0.05, p_raw: float | None = None, family: int | None = None) -> str:
    """The wording rule of every comparison: a direction only when p < alpha, else how large an effect could
    hide at this n. ``p`` is the p-value the decision uses - the Holm-adjusted one when the row is one of a
    family of ``family`` tests; ``p_raw`` (its unadjusted p) is then named when it alone would have been
    below alpha, so a reader sees why no direction is stated."""
    if p < alpha and diff != 0.0:
        return better if diff > 0 else worse
    if not math.isfinite(mde):
        return "cannot tell at this n (too few items for any test to reach p < 0.05)"
    size = f"{scale * mde:.1f}" if scale != 1.0 else f"{mde:.4f}"     # points to 0.1; nats to 4 decimals
    why = (f"; raw p < {alpha:g}, not after Holm over {family} rows"
           if p_raw is not None and p_raw < alpha and diff != 0.0 and family else "")
    return f"cannot tell at this n (an effect up to {size} {unit} could hide{why})"

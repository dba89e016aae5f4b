"""Unit tests for evals.stats on synthetic data with known answers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from evals import stats as S


def _bits(n_true: int, n: int) -> list[bool]:
    return [True] * n_true + [False] * (n - n_true)


# ---------------------------------------------------------------- mean_stderr
def test_mean_stderr_hand_computation():
    # mean 2.5; deviations -1.5,-0.5,0.5,1.5 -> SS=5, var(ddof=1)=5/3, se=sqrt(5/3)/2
    m, se = S.mean_stderr([1, 2, 3, 4])
    assert m == pytest.approx(2.5)
    assert se == pytest.approx(math.sqrt(5 / 3) / 2, rel=1e-12)
    assert isinstance(m, float) and isinstance(se, float)


def test_mean_stderr_float_scores_and_single_item():
    m, se = S.mean_stderr([0.25, 0.75])
    assert m == pytest.approx(0.5)
    assert se == pytest.approx(np.std([0.25, 0.75], ddof=1) / math.sqrt(2))
    assert S.mean_stderr([0.7]) == (0.7, 0.0)


def test_accuracy_summary_30_of_100():
    res = S.accuracy_summary(_bits(30, 100), n_resamples=2000)
    assert set(res) == {"acc", "acc_stderr", "ci95", "n"}
    assert res["n"] == 100
    assert res["acc"] == pytest.approx(0.3)
    # Bernoulli sample variance with ddof=1: 0.3*0.7*100/99
    assert res["acc_stderr"] == pytest.approx(math.sqrt(0.21 * 100 / 99) / 10, rel=1e-12)
    lo, hi = res["ci95"]
    assert lo < 0.3 < hi
    assert 0.19 < lo < 0.23 and 0.37 < hi < 0.41
    json.dumps(res)


def test_accuracy_summary_rejects_non_binary():
    with pytest.raises(ValueError, match="0/1"):
        S.accuracy_summary([0, 1, 0.5])


# ---------------------------------------------------------------- bootstrap_ci
def test_bootstrap_ci_constant_is_degenerate():
    assert S.bootstrap_ci([0.1] * 50, n_resamples=500) == (0.1, 0.1)
    assert S.bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_bootstrap_ci_bernoulli_width():
    p, n = 0.3, 10_000
    x = np.random.default_rng(123).random(n) < p
    lo, hi = S.bootstrap_ci(x, n_resamples=2000, seed=1)
    assert lo < p < hi
    expected = 2 * 1.96 * math.sqrt(p * (1 - p) / n)
    assert (hi - lo) == pytest.approx(expected, rel=0.10)


def test_bootstrap_ci_coverage():
    rng = np.random.default_rng(2024)
    true_mean, n, trials = 1.0, 50, 200
    covered = 0
    for i in range(trials):
        x = rng.normal(true_mean, 2.0, size=n)
        lo, hi = S.bootstrap_ci(x, n_resamples=1000, seed=i)
        covered += lo <= true_mean <= hi
    rate = covered / trials
    assert 0.90 <= rate <= 0.99, rate


def test_bootstrap_ci_alpha_widens():
    x = np.random.default_rng(0).normal(size=200)
    lo95, hi95 = S.bootstrap_ci(x, n_resamples=2000)
    lo99, hi99 = S.bootstrap_ci(x, n_resamples=2000, alpha=0.01)
    assert lo99 < lo95 < hi95 < hi99


def test_bootstrap_chunking_large_input_is_bounded():
    # 10k items would be 100M indices at once for 10k resamples; chunking must
    # still return the right shape and a sensible interval.
    x = np.random.default_rng(5).random(10_000) < 0.5
    lo, hi = S.bootstrap_ci(x, n_resamples=300)
    assert lo < x.mean() < hi


# ---------------------------------------------------------------- mcnemar
def test_mcnemar_exact_10_vs_0():
    a = [False] * 10 + [True] * 50 + [False] * 40
    b = [True] * 10 + [True] * 50 + [False] * 40
    res = S.mcnemar(a, b)
    assert res["n01"] == 10 and res["n10"] == 0
    assert res["method"] == "exact"
    assert res["p_value"] == pytest.approx(2 * 0.5**10, rel=1e-12)
    assert res["p_value"] == pytest.approx(0.001953125)


def test_mcnemar_identical_is_p1():
    a = _bits(37, 80)
    for exact in (None, True, False):
        res = S.mcnemar(a, a, exact=exact)
        assert res["n01"] == res["n10"] == 0
        assert res["p_value"] == 1.0


def test_mcnemar_chi2_textbook():
    n01, n10 = 30, 12
    a = [False] * n01 + [True] * n10 + [True] * 100 + [False] * 58
    b = [True] * n01 + [False] * n10 + [True] * 100 + [False] * 58
    res = S.mcnemar(a, b)
    assert res["method"] == "chi2-cc"
    stat = (abs(n01 - n10) - 1) ** 2 / (n01 + n10)
    assert stat == pytest.approx(289 / 42)
    assert res["statistic"] == pytest.approx(stat)
    assert res["p_value"] == pytest.approx(sps.chi2.sf(stat, 1))
    assert 0.005 < res["p_value"] < 0.01
    # Forcing exact changes the method and uses the binomial test.
    ex = S.mcnemar(a, b, exact=True)
    assert ex["method"] == "exact"
    assert ex["p_value"] == pytest.approx(sps.binomtest(30, 42, 0.5).pvalue)


def test_mcnemar_default_switch_at_25():
    def mk(n01, n10):
        a = [False] * n01 + [True] * n10
        b = [True] * n01 + [False] * n10
        return a, b

    assert S.mcnemar(*mk(14, 10))["method"] == "exact"  # 24 discordant
    assert S.mcnemar(*mk(15, 10))["method"] == "chi2-cc"  # 25 discordant


def test_mcnemar_length_mismatch():
    with pytest.raises(ValueError, match="same items"):
        S.mcnemar([True, False], [True])


# ---------------------------------------------------------------- paired_bootstrap
def test_paired_bootstrap_ten_more_right():
    rng = np.random.default_rng(7)
    b = (rng.random(200) < 0.5).astype(float)
    wrong = np.flatnonzero(b == 0)[:10]
    a = b.copy()
    a[wrong] = 1.0  # a is right on exactly 10 more items; identical elsewhere
    res = S.paired_bootstrap(a, b, n_resamples=5000)
    assert res["diff"] == pytest.approx(0.05)
    assert res["n"] == 200
    assert res["p_value"] < 0.01
    lo, hi = res["ci95"]
    assert 0.0 < lo < 0.05 < hi
    # Reversing the roles flips the sign.
    rev = S.paired_bootstrap(b, a, n_resamples=5000)
    assert rev["diff"] == pytest.approx(-0.05)
    assert rev["ci95"][1] < 0


def test_paired_bootstrap_identical_systems():
    a = np.random.default_rng(3).random(150) < 0.6
    res = S.paired_bootstrap(a, a, n_resamples=1000)
    assert res["diff"] == 0.0
    assert res["ci95"] == [0.0, 0.0]
    assert res["p_value"] == 1.0


def test_paired_detects_what_unpaired_misses():
    # 400 items, ~50% accuracy; b is right on 12 extra items, otherwise the
    # systems agree. Unpaired se ~ 0.035 >> diff 0.03; paired se is tiny.
    rng = np.random.default_rng(11)
    a = (rng.random(400) < 0.5).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:12]] = 1.0
    paired = S.drop_with_uncertainty(a, b, paired=True, n_resamples=5000)
    unpaired = S.drop_with_uncertainty(a, b, paired=False)
    assert paired["drop"] == pytest.approx(0.03) == unpaired["drop"]
    assert paired["p_value"] < 0.01
    assert unpaired["p_value"] > 0.2
    assert paired["drop_stderr"] < unpaired["drop_stderr"] / 3
    assert unpaired["ci95"][0] < 0 < unpaired["ci95"][1]
    assert paired["ci95"][0] > 0
    # McNemar agrees with the paired view.
    assert S.mcnemar(a, b)["p_value"] == pytest.approx(2 * 0.5**12)


def test_paired_bootstrap_p_value_floor():
    # a always right, b always wrong: no resample crosses zero, so with the +1
    # correction p = 2 * (0 + 1) / (B + 1), never 0.
    res = S.paired_bootstrap([1] * 20, [0] * 20, n_resamples=999)
    assert res["diff"] == 1.0
    assert res["p_value"] == pytest.approx(2 / 1000)


def test_paired_bootstrap_validation():
    with pytest.raises(ValueError, match="same items"):
        S.paired_bootstrap([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        S.paired_bootstrap([], [])
    with pytest.raises(ValueError, match="NaN"):
        S.paired_bootstrap([1.0, float("nan")], [1.0, 0.0])
    with pytest.raises(ValueError, match="n_resamples"):
        S.paired_bootstrap([1, 0], [0, 1], n_resamples=0)


# ---------------------------------------------------------------- drop
def test_drop_sign_convention():
    assert S.drop(0.60, 0.55) == pytest.approx(-0.05)  # forgetting is negative
    assert S.drop(0.50, 0.52) == pytest.approx(0.02)


def test_drop_with_uncertainty_fields():
    base = _bits(60, 100)
    tuned = _bits(50, 100)  # tuned loses 10 items -> drop -0.1
    res = S.drop_with_uncertainty(base, tuned, n_resamples=2000)
    assert set(res) >= {"drop", "drop_stderr", "ci95", "p_value", "n"}
    assert res["drop"] == pytest.approx(-0.1)
    # paired se: 10 of 100 items at -1, rest 0
    d = np.array([0.0] * 50 + [-1.0] * 10 + [0.0] * 40)
    assert res["drop_stderr"] == pytest.approx(d.std(ddof=1) / 10)
    assert res["ci95"][1] < 0
    json.dumps(res)


# ---------------------------------------------------------------- average_drop
def _bench(n, base_right, tuned_right):
    # tuned is right on a subset of the items base gets right
    return _bits(base_right, n), _bits(tuned_right, n)


def test_average_drop_unweighted():
    per = {
        "small": _bench(50, 30, 25),  # drop -0.1 on 50 items
        "large": _bench(1000, 800, 500),  # drop -0.3 on 1000 items
    }
    res = S.average_drop(per, n_resamples=2000)
    assert res["per_benchmark"]["small"] == pytest.approx(-0.1)
    assert res["per_benchmark"]["large"] == pytest.approx(-0.3)
    # Unweighted (-0.2), not item-weighted (-305/1050 ~ -0.29).
    assert res["average_drop"] == pytest.approx(-0.2)
    assert res["n_benchmarks"] == 2
    lo, hi = res["ci95"]
    assert lo < -0.2 < hi
    assert hi < 0
    se_small = np.std([0.0] * 45 + [-1.0] * 5, ddof=1) / math.sqrt(50)
    se_large = np.std([0.0] * 700 + [-1.0] * 300, ddof=1) / math.sqrt(1000)
    assert res["stderr"] == pytest.approx(math.hypot(se_small, se_large) / 2)
    json.dumps(res)

    # Sizes don't matter: swap which benchmark is big.
    per2 = {"small": _bench(1000, 600, 500), "large": _bench(50, 40, 25)}
    assert S.average_drop(per2, n_resamples=200)["average_drop"] == pytest.approx(-0.2)


def test_average_drop_order_independent_and_validates():
    per = {"x": _bench(40, 20, 18), "y": _bench(60, 30, 21)}
    rev = dict(reversed(list(per.items())))
    assert S.average_drop(per, n_resamples=500, seed=4) == S.average_drop(rev, n_resamples=500, seed=4)
    with pytest.raises(ValueError, match="empty"):
        S.average_drop({})
    with pytest.raises(ValueError, match="same items"):
        S.average_drop({"x": ([1, 0, 1], [1, 0])})


def test_compare_average_drops():
    rng = np.random.default_rng(21)
    base, ta, tb = {}, {}, {}
    for name, n in (("mmlu", 300), ("arc", 120)):
        b = (rng.random(n) < 0.6).astype(float)
        right = np.flatnonzero(b == 1)
        a_items = b.copy()
        a_items[right[:3]] = 0  # A forgets a little
        b_items = b.copy()
        b_items[right[: n // 5]] = 0  # B forgets a lot
        base[name], ta[name], tb[name] = b, a_items, b_items
    res = S.compare_average_drops(ta, tb, base, n_resamples=3000)
    avg_a = S.average_drop({k: (base[k], ta[k]) for k in base}, n_resamples=10)["average_drop"]
    avg_b = S.average_drop({k: (base[k], tb[k]) for k in base}, n_resamples=10)["average_drop"]
    assert res["diff"] == pytest.approx(avg_a - avg_b)
    assert res["diff"] > 0  # A forgets less
    assert res["ci95"][0] > 0
    assert res["p_value"] < 0.01
    # A vs itself: no difference.
    same = S.compare_average_drops(ta, ta, base, n_resamples=500)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="same benchmarks"):
        S.compare_average_drops({"mmlu": ta["mmlu"]}, tb, base)
    json.dumps(res)


# ---------------------------------------------------------------- seeds
def test_aggregate_seeds():
    res = S.aggregate_seeds([1, 2, 3])
    assert res == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3, "values": [1.0, 2.0, 3.0]}
    assert S.aggregate_seeds([0.4])["std"] == 0.0
    with pytest.raises(ValueError):
        S.aggregate_seeds([])


# ---------------------------------------------------------------- determinism
def test_determinism_same_seed_same_output():
    rng = np.random.default_rng(99)
    a = rng.random(300) < 0.55
    b = rng.random(300) < 0.5
    assert S.bootstrap_ci(a, seed=5, n_resamples=1000) == S.bootstrap_ci(a, seed=5, n_resamples=1000)
    assert S.paired_bootstrap(a, b, seed=5, n_resamples=1000) == S.paired_bootstrap(
        a, b, seed=5, n_resamples=1000
    )
    per = {"m": (a, b), "n": (b, a)}
    assert S.average_drop(per, seed=5, n_resamples=500) == S.average_drop(per, seed=5, n_resamples=500)
    # A different seed gives a (slightly) different interval.
    assert S.bootstrap_ci(a, seed=6, n_resamples=1000) != S.bootstrap_ci(a, seed=5, n_resamples=1000)


def test_outputs_are_plain_python_types():
    a = [1, 0, 1, 1, 0, 1]
    b = [1, 1, 0, 1, 0, 0]
    for res in (
        S.accuracy_summary(a, n_resamples=100),
        S.paired_bootstrap(a, b, n_resamples=100),
        S.mcnemar(a, b),
        S.drop_with_uncertainty(a, b, n_resamples=100),
        S.drop_with_uncertainty(a, b, paired=False),
    ):
        for v in res.values():
            assert type(v) in (float, int, str, list), (res, v)
            if isinstance(v, list):
                assert all(type(x) is float for x in v)
    lo, hi = S.bootstrap_ci(a, n_resamples=100)
    assert type(lo) is float and type(hi) is float


# ---------------------------------------------------------------- design-respecting comparisons
def test_seed_means_averages_per_item_over_common_items():
    assert S.seed_means([{"a": 1, "b": 0, "c": 1}, {"a": 0, "b": 0}]) == {"a": 0.5, "b": 0.0}
    with pytest.raises(ValueError):
        S.seed_means([])


def test_paired_comparison_copy_is_zero_and_p1():
    a = {str(i): float(i % 3 == 0) for i in range(30)}
    for kw in ({"binary_seeds": (1, 1)}, {"binary_seeds": (2, 2)}, {},
               {"clusters": {k: str(int(k) // 4) for k in a}}):
        r = S.paired_comparison(a, dict(a), **kw)
        assert (r["diff"], r["ci95"], r["p_value"]) == (0.0, [0.0, 0.0], 1.0), kw
        assert 0 < r["mde"] < 1


def test_paired_comparison_single_seed_binary_is_exact_mcnemar():
    a = {str(i): 1.0 for i in range(10)}
    b = {str(i): 0.0 if i < 8 else 1.0 for i in range(10)}   # 8 discordant, all one way
    r = S.paired_comparison(a, b, binary_seeds=(1, 1))
    assert r["test"].startswith("exact McNemar")
    assert r["p_value"] == pytest.approx(2 * 0.5**8)
    assert r["diff"] == pytest.approx(0.8)


def test_paired_comparison_sign_flip_is_exact_for_small_n():
    # 10 items, 7 positive and 3 zero differences: exact two-sided p = 2 * 2**3 / 2**10 ... = 2 / 2**7
    a = {str(i): 0.5 if i < 7 else 0.0 for i in range(10)}
    b = {str(i): 0.0 for i in range(10)}
    r = S.paired_comparison(a, b, binary_seeds=(2, 2))
    assert "exact" in r["test"] and r["p_value"] == pytest.approx(2 / 2**7)


def test_paired_comparison_clusters_are_the_unit():
    # 4 passages x 5 items, every item +1: only 4 units, so no sign-flip test can reach p < 0.05 (min p = 2/16)
    a = {str(i): 1.0 for i in range(20)}
    b = {str(i): 0.0 for i in range(20)}
    r = S.paired_comparison(a, b, clusters={str(i): str(i // 5) for i in range(20)})
    assert r["n_clusters"] == 4 and r["p_value"] == pytest.approx(0.125)
    assert r["mde"] == float("inf")   # fewer than K_MIN units: nothing detectable
    assert "cannot tell" in S.verdict(r["diff"], r["p_value"], r["mde"], better="x", worse="y")
    with pytest.raises(ValueError):
        S.paired_comparison(a, b, clusters={"0": "p"})


def test_mde_formula_and_floor():
    rng = np.random.default_rng(1)
    a = {str(i): float(v) for i, v in enumerate(rng.normal(size=100))}
    b = {str(i): float(v) for i, v in enumerate(rng.normal(size=100))}
    r = S.paired_comparison(a, b)
    assert r["mde"] == pytest.approx(S.Z_POWER * r["sd_diff"] / 10)
    assert S.Z_POWER == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    same = {str(i): 1.0 for i in range(50)}
    r = S.paired_comparison(same, dict(same), binary_seeds=(1, 1))   # sd 0: floor sqrt(6) * 1 / n
    assert r["mde"] == pytest.approx(S.Z_POWER * math.sqrt(S.K_MIN) / 50)


def test_paired_average_comparison_weights_each_benchmark_once():
    big = ({str(i): 1.0 for i in range(100)}, {str(i): 0.0 for i in range(100)}, 1)   # +1 on every item
    small = ({"x": 0.0, "y": 0.0}, {"x": 0.0, "y": 0.0}, 1)
    r = S.paired_average_comparison({"big": big, "small": small})
    assert r["diff"] == pytest.approx(0.5) and r["p_value"] < 1e-3 and r["n"] == 102
    copy = S.paired_average_comparison({"big": (big[0], big[0], 1), "small": small})
    assert (copy["diff"], copy["ci95"], copy["p_value"]) == (0.0, [0.0, 0.0], 1.0)


def test_verdict_wording():
    assert S.verdict(0.1, 0.01, 0.05, better="A forgets less", worse="A forgets more") == "A forgets less"
    assert S.verdict(-0.1, 0.01, 0.05, better="b", worse="w") == "w"
    assert S.verdict(0.1, 0.2, 0.123, better="b", worse="w") == "cannot tell at this n (an effect up to 12.3 points could hide)"


@pytest.mark.parametrize("n,binary", [(17, False), (300, True), (536, False), (2000, True)])
def test_streamed_sign_flip_is_scipys_permutation_test_value_for_value(n, binary, monkeypatch):
    """The streamed sign flips draw and sum exactly what scipy.stats.permutation_test does: the same null
    distribution bit for bit and the same p, ties included (0/1 differences tie often). Fewer resamples than the
    suite's 2**16 keep scipy's own run small; the draws do not depend on the count."""
    monkeypatch.setattr(S, "PERMUTATION_RESAMPLES", 3_000)
    rng = np.random.default_rng(n)
    units = (rng.integers(-1, 2, size=n) / 2.0 if binary else rng.normal(0.05, 1.0, size=n)) / n
    ref = sps.permutation_test((units,), lambda x, axis: np.sum(x, axis=axis), permutation_type="samples",
                               vectorized=True, n_resamples=3_000, alternative="two-sided",
                               random_state=np.random.default_rng(7))
    assert np.array_equal(S._sign_flip_null(units, 3_000, np.random.default_rng(7)), ref.null_distribution)
    assert S._sign_flip_p(units, 7) == min(1.0, ref.pvalue)


# ---------------------------------------------------------------- multiplicity and the clustered MDE
def test_holm_hand_worked():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> running max 0.06; input order back
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.2]) == [0.2]
    assert S.holm([]) == []
    assert S.holm([0.5, 0.6, 0.9]) == [1.0, 1.0, 1.0]           # capped at 1
    with pytest.raises(ValueError):
        S.holm([0.1, 1.5])


def test_holm_matches_a_direct_step_down_and_the_issue_rows():
    """Against the textbook step-down (reject H(1..k) while p(j) <= alpha / (m - j + 1)) on random families, and
    the issue's case: 20 rows, seven at p < 0.001, the three 'forgets more' rows at 0.013, 0.019, 0.033 fall."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        m = int(rng.integers(1, 30))
        p = list(rng.uniform(0, 0.2, size=m) ** 2)
        adj = S.holm(p)
        order = sorted(range(m), key=lambda i: p[i])
        rejected = set()
        for j, i in enumerate(order):
            if p[i] > 0.05 / (m - j):
                break
            rejected.add(i)
        assert {i for i in range(m) if adj[i] <= 0.05} == rejected
        assert all(a >= x for a, x in zip(adj, p))
    issue = [1e-4] * 7 + [0.013, 0.019, 0.033] + [0.2 + 0.05 * k for k in range(10)]
    adj = S.holm(issue)
    assert all(a < 0.05 for a in adj[:7]) and all(a >= 0.05 for a in adj[7:])


def test_verdict_names_a_raw_p_that_falls_under_holm():
    v = S.verdict(0.016, 0.23, 0.018, better="s3ft forgets more", worse="s3ft forgets less", p_raw=0.013, family=20)
    assert v == ("cannot tell at this n (an effect up to 1.8 points could hide; raw p < 0.05, not after Holm over "
                 "20 rows)")
    assert S.verdict(0.016, 0.01, 0.018, better="b", worse="w", p_raw=0.0005, family=20) == "b"


def test_clustered_mde_uses_the_larger_standard_error():
    # Within each passage the differences cancel (+1, -1): the cluster-robust se is ~0, the per-item one is not.
    # The MDE must not claim the precision of the clustered se.
    n = 40
    a = {str(i): 1.0 if i % 2 == 0 else 0.0 for i in range(n)}
    b = {str(i): 0.0 if i % 2 == 0 else 1.0 for i in range(n)}
    clusters = {str(i): str(i // 2) for i in range(n)}
    r = S.paired_comparison(a, b, clusters=clusters)
    assert r["mde"] == pytest.approx(S.Z_POWER * r["sd_diff"] / math.sqrt(n))
    # Where passages move together the clustered se is the larger, and it sets the MDE.
    rng = np.random.default_rng(5)
    shift = {str(g): float(rng.normal()) for g in range(10)}
    a = {str(i): shift[str(i // 4)] + 0.1 * float(rng.normal()) for i in range(n)}
    b = {str(i): 0.0 for i in range(n)}
    clusters = {str(i): str(i // 4) for i in range(n)}
    r = S.paired_comparison(a, b, clusters=clusters)
    d = np.array([a[k] for k in sorted(a)])
    sums = np.array([sum(a[str(i)] for i in range(4 * g, 4 * g + 4)) for g in range(10)])
    se_cluster = math.sqrt(10 / 9 * float(np.sum((sums - d.mean() * 4) ** 2))) / n
    assert se_cluster > r["sd_diff"] / math.sqrt(n)
    assert r["mde"] == pytest.approx(S.Z_POWER * se_cluster)

"""repro/report/power.py: the MDE formula on synthetic data with known variances, and the command on mini."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evals.stats import Z_POWER, paired_comparison
from repro.report import power


def test_known_sd_gives_known_mde():
    assert power.mde(0.2, 100) == pytest.approx(Z_POWER * 0.2 / 10)
    assert Z_POWER == pytest.approx(1.959964 + 0.841621, abs=1e-5)


def test_mde_shrinks_as_one_over_sqrt_n():
    m = [power.mde(0.3, n) for n in (50, 200, 800)]
    assert m[1] == pytest.approx(m[0] / 2)
    assert m[2] == pytest.approx(m[0] / 4)


def test_more_seeds_shrink_only_the_seed_term():
    sd, n, seed_var, e = 0.25, 400, 0.0004, 0.02
    item_only = power.mde(sd, n)
    for s in (1, 2, 3, 10):
        m = power.mde(sd, n, seeds=s, seed_var=seed_var, item_seed_var=e)
        # the squared MDE splits into an item part, unchanged, and a seed part that falls as 1/S
        assert (m / Z_POWER) ** 2 == pytest.approx((item_only / Z_POWER) ** 2 + (seed_var + e / n) / s)
    assert power.mde(sd, n, seeds=10**6, seed_var=seed_var, item_seed_var=e) == pytest.approx(item_only, rel=1e-4)
    assert power.mde(sd, n, seeds=1, seed_var=seed_var) > power.mde(sd, n, seeds=3, seed_var=seed_var)


def test_binary_floor_as_in_stats():
    # a 0/1 difference with no spread still cannot show less than K_MIN flips: the floor of evals/stats.py
    assert power.mde(0.0, 100, binary=True) == pytest.approx(Z_POWER * math.sqrt(6) / 100)
    assert power.mde(0.0, 100, binary=False) == 0.0


def test_average_of_four_equal_benchmarks_is_one_benchmark_of_4n():
    parts = [{"sd_item": 0.4}] * 4
    assert power.mde_average(parts, [250] * 4) == pytest.approx(power.mde(0.4, 1000))
    # the seed term of the average adds as in (a)
    with_seed = power.mde_average(parts, [250] * 4, seeds=2, seed_var=0.0001)
    assert (with_seed / Z_POWER) ** 2 == pytest.approx(0.16 / 1000 + 0.0001 / 2)
    # a small benchmark dominates: its n sets the MDE
    assert power.mde_average(parts, [1000, 1000, 1000, 10]) > power.mde_average(parts, [250] * 4)


def test_components_recover_known_variances():
    rng = np.random.default_rng(0)
    seeds, n = 200, 2000
    s_item, s_e, s_seed = 0.3, 0.2, 0.05
    item = rng.normal(0, s_item, n)                      # persistent item x method effect
    shift = rng.normal(0, s_seed, (seeds, 1))            # one seed's adapter better everywhere
    d = 0.01 + item + shift + rng.normal(0, s_e, (seeds, n))
    c = power.components(d)
    assert c.sd_item == pytest.approx(s_item, rel=0.05)
    assert c.item_seed_var == pytest.approx(s_e**2, rel=0.05)
    assert c.seed_var == pytest.approx(s_seed**2, rel=0.3)   # 200 replicates of a variance: ~10% sd
    one = power.components(d[:1])
    assert one.seed_var == 0.0 and one.item_seed_var == 0.0 and one.notes


def test_one_seed_continuous_matches_paired_comparison():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, 60), rng.uniform(0, 1, 60)
    c = power.components((a - b)[None, :])
    keys = [f"i{k}" for k in range(60)]
    ref = paired_comparison(dict(zip(keys, a)), dict(zip(keys, b)), n_resamples=99)
    assert power.mde(c.sd_item, 60) == pytest.approx(ref["mde"])


def test_cluster_design_effect_and_projection():
    rng = np.random.default_rng(2)
    g, m, rho = 400, 10, 0.3
    cl = np.repeat(rng.normal(0, math.sqrt(rho), g), m)
    d = cl + rng.normal(0, math.sqrt(1 - rho), g * m)
    labels = [str(k) for k in np.repeat(np.arange(g), m)]
    deff, r, groups = power.cluster_design_effect(d, labels)
    assert groups == g
    assert r == pytest.approx(rho, abs=0.06)
    assert deff == pytest.approx(1 + (m - 1) * rho, rel=0.2)
    assert power.projected_deff(0.3, 500, 25) == pytest.approx(1 + (20 - 1) * 0.3)
    assert power.projected_deff(0.3, 20, 25) == 1.0      # fewer items than clusters: one per cluster
    # unequal passages: the big ones weigh more (m_eff = n sum m^2 / N^2), and a subset scales them down
    assert power.projected_deff(0.3, 100, [90, 10]) == pytest.approx(1 + (100 * 8200 / 100**2 - 1) * 0.3)
    assert power.projected_deff(0.3, 50, [90, 10]) == pytest.approx(1 + (50 * 8200 / 100**2 - 1) * 0.3)
    assert power.projected_deff(0.3, 100, [50, 50]) == pytest.approx(power.projected_deff(0.3, 100, 2))
    assert power.cluster_design_effect([0.1, 0.2, 0.3], ["a", "b", "c"])[0] == 1.0   # independent items


def test_power_command_on_committed_mini(capsys, tmp_path):
    from repro.cli import build_parser

    out = tmp_path / "power.md"
    args = build_parser().parse_args(["power", "--results", "results", "--preset", "mini", "--n-test", "48", "536",
                                      "--n-bench", "100", "--test-clusters", "25", "--out", str(out)])
    assert args.func(args) == 0
    text = out.read_text()
    assert "## (a) In-domain squad f1: s3ft - sft" in text and "## (b) Paper-four average drop" in text
    rows = [ln for ln in text.splitlines() if ln.startswith(("| 48", "| 536"))]
    assert len(rows) == 2
    m48, m536 = (float(r.split("|")[2]) for r in rows)
    assert m536 < m48                                    # more items, smaller MDE (even clustered)


def test_bench_sizes_per_benchmark_and_capped():
    full = {"mmlu": 14042, "truthfulqa_mc2": 817}
    names = ["mmlu", "truthfulqa_mc2"]
    assert power._sizes("1000", names, full) == [1000, 817]
    assert power._sizes("570/all", names, full) == [570, 817]
    assert power._sizes("all", names, {"mmlu": 14042}) is None      # size unknown without data
    with pytest.raises(ValueError, match="2 benchmarks"):
        power._sizes("1/2/3", names, full)

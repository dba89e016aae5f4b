"""Sign-flip permutation p-values: scipy.stats.permutation_test vs the suite's streamed sign flips (evals/stats.py).

    python -m benchmarks.stats                      # 3,000 items (a study's four benchmarks), 65,536 flips
    python -m benchmarks.stats --items 536 --reps 5

Every comparison row of the tables takes one sign-flip p over per-item (or per-passage) differences with 2**16
random flips. scipy draws all flips at once as resamples x items x 2 int64 indices; the suite draws the same 32-bit
words chunk by chunk and sums in scipy's order (`evals.stats._sign_flip_null`), so the p-values are equal, not
close. This script times the two arms interleaved (scipy, streamed, streamed, scipy, ...), checks that their null
distributions are identical on every repetition, records the peak resident memory of each arm (measured in a fresh
subprocess, since RSS peaks never go down), and writes benchmarks/results/stats.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np
from scipy import stats as sps
from evals import stats as S
arm, n, flips, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
units = np.random.default_rng(seed).integers(-1, 2, size=n) / (2.0 * n)   # 0/1 scores of two seeds: many ties
t0 = time.perf_counter()
if arm == "scipy":
    null = sps.permutation_test((units,), lambda x, axis: np.sum(x, axis=axis), permutation_type="samples",
                                vectorized=True, n_resamples=flips, alternative="two-sided",
                                random_state=np.random.default_rng(seed)).null_distribution
else:
    null = S._sign_flip_null(units, flips, np.random.default_rng(seed))
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "null_sha": __import__("hashlib").sha256(null.tobytes()).hexdigest()}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stats", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=3000, help="units flipped (items or passages)")
    p.add_argument("--flips", type=int, default=2**16, help="random sign flips (the suite uses 2**16)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from benchmarks import _common as C  # noqa: PLC0415

    env = C.environment()

    def arm(name: str):
        def run(rep: int) -> dict:
            with C.Timer() as t:
                proc = subprocess.run([sys.executable, "-c", CHILD, name, str(args.items), str(args.flips), str(rep)],
                                      capture_output=True, text=True, check=True, cwd=C.REPO)
            rec = t.record()
            # the child's "seconds" time the p-value's work alone; the process's include imports
            return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_seconds": rec["seconds"],
                    "load_before": rec["load_before"], "load_after": rec["load_after"], "rep": rep}
        return run

    start = time.perf_counter()
    runs = C.interleaved({"scipy": arm("scipy"), "streamed": arm("streamed")}, args.reps)
    by: dict[str, list[dict]] = {"scipy": [], "streamed": []}
    for name, _, result in runs:
        by[name].append(result)
    identical = all(a["null_sha"] == b["null_sha"] for a, b in zip(by["scipy"], by["streamed"]))
    med = {k: C.median([r["seconds"] for r in v]) for k, v in by.items()}
    rss = {k: C.median([r["peak_rss_mib"] for r in v]) for k, v in by.items()}
    ratio = med["scipy"] / med["streamed"] if med["streamed"] else None
    doc = {"benchmark": "stats", "environment": env, "items": args.items, "flips": args.flips, "reps": args.reps,
           "runs": [{"arm": n, **r} for n, _, r in runs], "median_seconds": med, "median_peak_rss_mib": rss,
           "speedup_streamed_over_scipy": ratio, "null_distributions_identical": identical,
           "total_seconds": round(time.perf_counter() - start, 1)}
    path = C.write_result("stats", doc, args.out)
    print(C.table([[k, f"{med[k]:.2f}", f"{rss[k]:.0f}"] for k in by], ["arm", "median s", "peak RSS MiB"]))
    print(f"streamed is {C.fmt_ratio(ratio)} faster; null distributions identical on every repetition: {identical}")
    print(f"wrote {path}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark scoring: the shared-prefix lm-eval backend (s3ft-packed) vs lm-eval's HF backend, on the same items.

    python -m benchmarks.lm_scoring                       # SmolLM2-135M-Instruct, five benchmarks, CPU
    python -m benchmarks.lm_scoring --limits mmlu=57 hellaswag=80 --reps 2

Both arms run the suite's own path, ``evals.benchmarks.evaluate_benchmarks`` (lm-eval's task YAMLs, prompts, metrics,
seeded items), on the same loaded model object, differing only in ``backend``:

  hf       lm-eval's HFLM (batch size --batch-size, the presets' 8): one padded sequence per (context, choice),
           except that HFLM already runs one-token continuations of one context once (MMLU's letters)
  packed   evals.lm_backend.PackedLM: HFLM's tokenisation, every distinct prefix run once (an item's context for
           all its choices; a preamble shared by all items, e.g. TruthfulQA's 6-shot block, once and cached),
           padding-free rows of --max-batch-tokens

Timing is interleaved per benchmark with alternating order (hf,packed / packed,hf / ...), so load drift on a shared
machine hits both alike; load averages are recorded around every timed block. Two times per call: the whole
``evaluate_benchmarks`` call (task set-up + scoring + metrics: what a cell pays) and the time inside the model's
``loglikelihood`` (scoring only). Equality: per-choice log-likelihood differences (max |diff|, fp32), per-item
metrics and the aggregate metrics of both arms; the packed arm's token counts (tokens one-by-one scoring would run
vs distinct prefixes it ran) say where the gain comes from. Winogrande's partial scoring puts the two options in
the context and scores the common rest of the sentence: only the words before the blank are shared.
"""
from __future__ import annotations

import argparse
import sys
import time

from benchmarks import _common as C  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)

BENCHES = ("mmlu", "truthfulqa_mc2", "hellaswag", "winogrande", "arc_challenge")
DEFAULT_LIMITS = {"mmlu": 57, "truthfulqa_mc2": 8, "hellaswag": 32, "winogrande": 40, "arc_challenge": 32}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lm_scoring", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=C.DEFAULT_MODEL)
    p.add_argument("--limits", nargs="*", default=[], metavar="NAME=N",
                   help=f"items per benchmark (default {DEFAULT_LIMITS}; MMLU's are spread over its subjects)")
    p.add_argument("--seed", type=int, default=1234, help="item subsample seed (the presets' benchmark_seed)")
    p.add_argument("--batch-size", type=int, default=8, help="HF backend batch size (the presets' default: 8)")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="packed backend row budget "
                                                                       "(default: the backend's)")
    p.add_argument("--reps", type=int, default=1, help="passes; each times every benchmark once per arm")
    p.add_argument("--data-dir", default=C.DEFAULT_DATA)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/lm_scoring.json)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import numpy as np  # noqa: PLC0415

    import evals.benchmarks as general  # noqa: PLC0415
    from evals.lm_backend import DEFAULT_MAX_BATCH_TOKENS  # noqa: PLC0415
    from repro.runtime import models  # noqa: PLC0415

    limits = C.parse_limits(args.limits, DEFAULT_LIMITS)
    max_batch_tokens = args.max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS

    load_start = C.load()
    env = C.environment(args.model)
    model, tok = models.load(args.model, device="cpu")

    # Time the model's own loglikelihood calls inside evaluate_benchmarks (scoring only, no task set-up).
    inner: dict[str, float] = {}
    last_lm: dict[str, object] = {}
    make_lm = general.make_lm

    def timed_make_lm(*a, **kw):
        lm = make_lm(*a, **kw)
        if kw.get("backend") == "packed":
            lm.max_batch_tokens = max_batch_tokens
        original = lm.loglikelihood

        def loglikelihood(requests, *x, **y):
            t0 = time.perf_counter()
            try:
                return original(requests, *x, **y)
            finally:
                inner["seconds"] = inner.get("seconds", 0.0) + time.perf_counter() - t0
                inner["requests"] = inner.get("requests", 0) + len(requests)

        lm.loglikelihood = loglikelihood
        last_lm["lm"] = lm
        return lm

    general.make_lm = timed_make_lm

    def run(bench: str, arm: str) -> dict:
        inner.clear()
        spec = general.BenchmarkSpec(bench, limits[bench])
        with C.Timer() as t:
            res = general.evaluate_benchmarks(model, tok, [spec], data_dir=Path(args.data_dir), seed=args.seed,
                                              batch_size=args.batch_size, return_loglikelihoods=True, backend=arm)
        stats = dict(getattr(last_lm["lm"], "stats", {}) or {})
        return {"timing": t.record(), "scoring_seconds": round(inner.get("seconds", 0.0), 3),
                "requests": inner.get("requests", 0), "stats": stats, "result": res}

    timings: dict[str, dict[str, list]] = {b: {"hf": [], "packed": []} for b in BENCHES}
    results: dict[str, dict[str, dict]] = {b: {} for b in BENCHES}
    flip = 0
    for rep in range(args.reps):
        for bench in BENCHES:
            order = ("hf", "packed") if flip % 2 == 0 else ("packed", "hf")
            flip += 1
            for arm in order:
                out = run(bench, arm)
                print(f"rep {rep} {bench:15s} {arm:6s} {out['timing']['seconds']:7.1f}s "
                      f"(scoring {out['scoring_seconds']:.1f}s) load {out['timing']['load_after']}", flush=True)
                timings[bench][arm].append({k: out[k] for k in ("timing", "scoring_seconds", "requests", "stats")})
                results[bench][arm] = out["result"]

    per_bench, rows = {}, []
    tot = {"hf": [0.0, 0.0], "packed": [0.0, 0.0]}
    for bench in BENCHES:
        hf, pk = results[bench]["hf"], results[bench]["packed"]
        a, b = hf["samples"][bench], pk["samples"][bench]
        assert [x["key"] for x in a] == [x["key"] for x in b]
        diffs = [float(np.max(np.abs(np.array(x["loglikelihoods"]) - np.array(y["loglikelihoods"]))))
                 for x, y in zip(a, b)]
        metrics = general.BENCHMARKS[bench].metrics
        # 0/1 metrics must be identical; a continuous one (mc2's probability mass) agrees to rounding
        differing = sum(any(x[m] != y[m] if x[m] in (0.0, 1.0) else abs(x[m] - y[m]) > 1e-4 for m in metrics)
                        for x, y in zip(a, b))
        metric_diff = max(abs(x[m] - y[m]) for x, y in zip(a, b) for m in metrics)
        med = {arm: {"evaluate_s": C.median([r["timing"]["seconds"] for r in timings[bench][arm]]),
                     "scoring_s": C.median([r["scoring_seconds"] for r in timings[bench][arm]])}
               for arm in ("hf", "packed")}
        for arm in tot:
            tot[arm][0] += med[arm]["evaluate_s"]
            tot[arm][1] += med[arm]["scoring_s"]
        primary = general.BENCHMARKS[bench].primary_metric
        per_bench[bench] = {
            "items": len(a), "requests": timings[bench]["hf"][0]["requests"],
            "choices_per_item": round(sum(len(x["loglikelihoods"]) for x in a) / len(a), 2),
            "median_seconds": med,
            "ratio_evaluate": med["hf"]["evaluate_s"] / med["packed"]["evaluate_s"],
            "ratio_scoring": med["hf"]["scoring_s"] / med["packed"]["scoring_s"],
            "packed_token_counts": timings[bench]["packed"][0]["stats"],
            "max_abs_loglikelihood_diff": max(diffs),
            "items_with_differing_metrics": differing,
            "max_abs_item_metric_diff": metric_diff,
            "primary_metric": primary,
            "score": {"hf": hf["results"][bench][primary], "packed": pk["results"][bench][primary]},
            "results": {"hf": hf["results"][bench], "packed": pk["results"][bench]},
            "timings": timings[bench],
        }
        counts = per_bench[bench]["packed_token_counts"]
        rows.append([bench, len(a), per_bench[bench]["choices_per_item"], med["hf"]["scoring_s"],
                     med["packed"]["scoring_s"], C.fmt_ratio(per_bench[bench]["ratio_scoring"]),
                     C.fmt_ratio(per_bench[bench]["ratio_evaluate"]),
                     f"{counts.get('input_tokens', 0)}/{counts.get('computed_tokens', 0)}", f"{max(diffs):.1e}",
                     differing])
    overall = {"evaluate": tot["hf"][0] / tot["packed"][0], "scoring": tot["hf"][1] / tot["packed"][1],
               "seconds": {arm: {"evaluate_s": v[0], "scoring_s": v[1]} for arm, v in tot.items()}}
    rows.append(["all five", sum(p["items"] for p in per_bench.values()), "", tot["hf"][1], tot["packed"][1],
                 C.fmt_ratio(overall["scoring"]), C.fmt_ratio(overall["evaluate"]), "",
                 f"{max(p['max_abs_loglikelihood_diff'] for p in per_bench.values()):.1e}",
                 sum(p["items_with_differing_metrics"] for p in per_bench.values())])

    doc = {
        "benchmark": "lm_scoring",
        "what": "benchmark scoring through evals.benchmarks.evaluate_benchmarks: the shared-prefix lm-eval backend "
                "(s3ft-packed) vs lm-eval's HF backend on the same items, interleaved per benchmark",
        "setup": {"model": args.model, "dtype": str(next(model.parameters()).dtype), "limits": limits,
                  "seed": args.seed, "hf_batch_size": args.batch_size, "packed_max_batch_tokens": max_batch_tokens,
                  "reps": args.reps, "data_dir": args.data_dir},
        "environment": env,
        "per_benchmark": per_bench,
        "ratio_hf_over_packed": overall,
        "target": {"ratio": 2.5, "on": "scoring over the five benchmarks together",
                   "met_scoring": overall["scoring"] >= 2.5, "met_evaluate": overall["evaluate"] >= 2.5},
        "equality": {"max_abs_loglikelihood_diff": max(p["max_abs_loglikelihood_diff"] for p in per_bench.values()),
                     "within_1e-4": all(p["max_abs_loglikelihood_diff"] <= 1e-4 for p in per_bench.values()),
                     "items_with_differing_metrics": sum(p["items_with_differing_metrics"]
                                                         for p in per_bench.values())},
        "load_start": load_start, "load_end": C.load(),
    }
    path = C.write_result("lm_scoring", doc, args.out)
    print(C.table(rows, ["benchmark", "items", "choices", "hf s", "packed s", "scoring x", "evaluate x",
                         "tokens in/run", "max |dLL|", "items differing"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

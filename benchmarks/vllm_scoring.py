"""Benchmark scoring through vLLM's ``prompt_logprobs`` vs the suite's packed HF scorer, on the same sequences.

    python -m benchmarks.vllm_scoring                      # SmolLM2-135M-Instruct, four benchmarks, CPU
    python -m benchmarks.vllm_scoring --limits hellaswag=40 --reps 2

Decides issue 26's point 7: route benchmark scoring through vLLM only if it beats the packed scorer at equal scores.

The sequences are the benchmarks' own: ``evals.benchmarks.evaluate_benchmarks`` runs once on the packed backend
(lm-eval's task YAMLs, prompts, seeded items) while every call to the packed scorer (``score_sequences``: full token
sequences and how many trailing tokens are scored) is recorded. Both arms then score exactly those calls, timed
interleaved with alternating order:

  packed   repro.runtime.scoring.score_sequences on the HF model in fp32 (shared prefixes once, padding-free rows)
  vllm     one vLLM CPU engine (fp32, 1 GiB KV cache, LoRA off: with LoRA enabled, as the suite's VLLMEngine
           starts it, vLLM 0.32's CPU build fails on prompt_logprobs; vLLM's defaults otherwise, automatic prefix
           caching included),
           ``generate`` with ``max_tokens=1, prompt_logprobs=0`` on the token ids, the scored tokens' log-probs summed

Reported: scored sequences and their tokens per second of each arm, the ratio, max |d log-likelihood| per
sequence (absolute and relative to its magnitude) and the multiple-choice items whose best choice (highest summed
log-likelihood among sequences sharing a context, lm-eval's ``acc``) differs between the arms.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks import _common as C  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)

BENCHES = ("mmlu", "truthfulqa_mc2", "hellaswag", "winogrande")
DEFAULT_LIMITS = {"mmlu": 57, "truthfulqa_mc2": 16, "hellaswag": 32, "winogrande": 40}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vllm_scoring", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=C.DEFAULT_MODEL)
    p.add_argument("--limits", nargs="*", default=[], metavar="NAME=N",
                   help=f"items per benchmark (default {DEFAULT_LIMITS})")
    p.add_argument("--seed", type=int, default=1234, help="item subsample seed (the presets' benchmark_seed)")
    p.add_argument("--reps", type=int, default=2, help="passes; each times every recorded call once per arm")
    p.add_argument("--data-dir", default=C.DEFAULT_DATA)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/vllm_scoring_<model>.json)")
    return p.parse_args(argv)


def _vllm_scores(engine, seqs, n_scored) -> list[float]:
    from vllm import SamplingParams  # noqa: PLC0415

    outs = engine.llm.generate([{"prompt_token_ids": list(s)} for s in seqs],
                               SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False)
    sums = []
    for seq, k, out in zip(seqs, n_scored, outs):
        lps = out.prompt_logprobs                  # one dict per prompt position (None at position 0)
        sums.append(sum(lps[i][seq[i]].logprob for i in range(len(seq) - k, len(seq))))
    return sums


def _best_choice_changes(seqs, n_scored, a: list[float], b: list[float]) -> tuple[int, int]:
    """(items whose argmax over choices differs, items with 2+ choices): choices = sequences sharing a context."""
    groups: dict[tuple, list[int]] = {}
    for i, (s, k) in enumerate(zip(seqs, n_scored)):
        groups.setdefault(tuple(s[:len(s) - k]), []).append(i)
    multi = [g for g in groups.values() if len(g) > 1]
    changed = sum(max(g, key=lambda i: a[i]) != max(g, key=lambda i: b[i]) for g in multi)
    return changed, len(multi)


def main(argv=None) -> int:
    args = parse_args(argv)
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch  # noqa: PLC0415

    import evals.benchmarks as general  # noqa: PLC0415
    import evals.lm_backend as backend  # noqa: PLC0415
    from evals.lm_backend import DEFAULT_MAX_BATCH_TOKENS  # noqa: PLC0415
    from repro.runtime import generate as G  # noqa: PLC0415
    from repro.runtime import models  # noqa: PLC0415
    from repro.runtime.scoring import score_sequences  # noqa: PLC0415

    limits = C.parse_limits(args.limits, DEFAULT_LIMITS)

    load_start = C.load()
    env = C.environment(args.model)
    model, tok = models.load(args.model, device="cpu", dtype=torch.float32)

    calls: list[tuple[str, list, list]] = []     # (benchmark, sequences, scored tokens) of every scorer call
    current = {"bench": None}

    def recording(m, seqs, n_scored, **kw):
        calls.append((current["bench"], [list(s) for s in seqs], list(n_scored)))
        return score_sequences(m, seqs, n_scored, **kw)

    backend.score_sequences = recording
    for name in BENCHES:
        current["bench"] = name
        general.evaluate_benchmarks(model, tok, [general.BenchmarkSpec(name, limit=limits[name])],
                                    data_dir=Path(args.data_dir), seed=args.seed, backend="packed")
    backend.score_sequences = score_sequences
    print(f"recorded {len(calls)} scorer calls, {sum(len(c[1]) for c in calls)} sequences", file=sys.stderr)

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM  # noqa: PLC0415

    with C.Timer() as t_engine:
        # Not the suite's VLLMEngine: it always enables LoRA, and with LoRA enabled vLLM 0.32's CPU build fails on
        # prompt_logprobs ("einsum(): subscript b has size 2 ... with previously seen size 108" in bgmv_shrink).
        engine = SimpleNamespace(llm=LLM(model=models.local_path(args.model), dtype="float32", seed=0,
                                         kv_cache_memory_bytes=1024**3))
    print(f"vLLM engine: {t_engine.seconds:.1f} s to start", file=sys.stderr)
    _vllm_scores(engine, calls[0][1][:2], calls[0][2][:2])     # warm-up, untimed

    arms = {"packed": lambda c: [s.sum for s in score_sequences(model, c[1], c[2],
                                                                max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS)],
            "vllm": lambda c: _vllm_scores(engine, c[1], c[2])}
    timings, sums = [], {a: [[] for _ in calls] for a in arms}
    for rep in range(args.reps):
        for ci, call in enumerate(calls):
            order = list(arms) if (rep + ci) % 2 == 0 else list(arms)[::-1]
            for arm in order:
                with C.Timer() as t:
                    out = arms[arm](call)
                tokens = sum(len(s) for s in call[1])
                timings.append({"arm": arm, "rep": rep, "call": ci, "benchmark": call[0], "sequences": len(call[1]),
                                "tokens": tokens, **t.record()})
                if rep == 0:
                    sums[arm][ci] = out

    per_bench, result_arms = {}, {}
    for arm in arms:
        rows = [r for r in timings if r["arm"] == arm]
        result_arms[arm] = {"seconds": round(sum(r["seconds"] for r in rows), 3),
                            "tokens_per_s": sum(r["tokens"] for r in rows) / sum(r["seconds"] for r in rows)}
    for name in BENCHES:
        idx = [i for i, c in enumerate(calls) if c[0] == name]
        a = [x for i in idx for x in sums["packed"][i]]
        b = [x for i in idx for x in sums["vllm"][i]]
        seqs = [s for i in idx for s in calls[i][1]]
        ks = [k for i in idx for k in calls[i][2]]
        diffs = [abs(x - y) for x, y in zip(a, b)]
        rel = [d / max(abs(x), 1e-12) for d, x in zip(diffs, a)]
        changed, items = _best_choice_changes(seqs, ks, a, b)
        secs = {arm: sum(r["seconds"] for r in timings if r["arm"] == arm and r["benchmark"] == name)
                for arm in arms}
        per_bench[name] = {**({"note": "its two options sit in the context (partial scoring), so no two sequences "
                                        "share a context: no best-choice comparison"} if name == "winogrande" else {}),
                           "sequences": len(a), "max_abs_d_loglik": max(diffs, default=0.0),
                           "max_rel_d_loglik": max(rel, default=0.0), "items_with_choices": items,
                           "best_choice_changed": changed,
                           "seconds": {k: round(v, 3) for k, v in secs.items()},
                           "vllm_speedup": secs["packed"] / secs["vllm"] if secs["vllm"] else None}
    speedup = result_arms["packed"]["seconds"] / result_arms["vllm"]["seconds"]
    doc = {
        "benchmark": "vllm_scoring",
        "what": "the packed HF scorer (fp32) vs vLLM CPU prompt_logprobs (fp32, LoRA off) on the benchmarks' "
                "own recorded scorer calls, interleaved, alternating order",
        "setup": {"model": args.model, "limits": limits, "seed": args.seed, "reps": args.reps,
                  "vllm_version": G.vllm_version(), "packed_max_batch_tokens": DEFAULT_MAX_BATCH_TOKENS,
                  "engine_start_s": round(t_engine.seconds, 1), "calls": len(calls)},
        "environment": env,
        "arms": result_arms,
        "vllm_speedup": speedup,
        "benchmarks": per_bench,
        "decision": ("vLLM scoring is faster" if speedup > 1 else "the packed HF scorer stays: vLLM is not faster")
                    + f" ({speedup:.2f}x the packed scorer's speed)",
        "timings": timings,
        "load_start": load_start, "load_end": C.load(),
    }
    slug = args.model.replace("/", "_").rstrip("_").split("_")[-1]
    path = C.write_result(f"vllm_scoring_{slug}", doc, args.out)
    print(C.table([(n, e["sequences"], e["seconds"]["packed"], e["seconds"]["vllm"], C.fmt_ratio(e["vllm_speedup"]),
                    f"{e['max_abs_d_loglik']:.2e}", f"{e['max_rel_d_loglik']:.2e}",
                    f"{e['best_choice_changed']}/{e['items_with_choices']}") for n, e in per_bench.items()],
                  ["benchmark", "sequences", "packed s", "vllm s", "vllm speed-up", "max |d|", "max rel |d|",
                   "best choice changed"]))
    print(f"{doc['decision']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""OpenMP wait policy on a shared CPU: HF-backend generation throughput with OMP_WAIT_POLICY unset vs PASSIVE.

    python -m benchmarks.omp_wait                  # as the machine is now
    python -m benchmarks.omp_wait --contend 2      # plus 2 background 2-thread matmul loops (a busy shared machine)

PyTorch's CPU kernels synchronise their threads through OpenMP barriers. By default libgomp spin-waits at a barrier,
which is fastest on an idle machine; when other processes also want the cores (other test suites, other cells), the
spinning threads take CPU time from the thread doing the work and every small kernel pays for it. PASSIVE makes
waiting threads sleep. The policy is read once, when the OpenMP runtime starts, so each measurement is a fresh
subprocess; the two settings alternate (unset, PASSIVE, PASSIVE, unset, ...) and medians are reported, with load
averages. The other benchmarks set PASSIVE (benchmarks/_common.py) unless the caller set OMP_WAIT_POLICY.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, os, sys, time
from pathlib import Path
from evals.tasks import get_task
from repro.runtime.generate import DecodingParams, make_generator
n, new, data = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
task = get_task("gsm8k")
msgs = [task.predict_messages(e) for e in task.load("train", Path(data), limit=n, seed=1234)]
gen = make_generator("smollm2-135m-instruct", backend="hf", cache=None, batch_size=n)
gen.generate(msgs[:1], DecodingParams(max_new_tokens=2), tag="warm", progress=False)
t0 = time.perf_counter()
outs = gen.generate(msgs, DecodingParams(max_new_tokens=new), tag="bench", progress=False)
dt = time.perf_counter() - t0
print(json.dumps({"tokens": sum(o.n_output_tokens for o in outs), "seconds": dt}))
"""

HOG = "import torch\na = torch.randn(256, 256)\nwhile True:\n    a @ a\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.omp_wait", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8, help="GSM8K train prompts, one batch")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--contend", type=int, default=0, help="background 2-thread matmul processes during the runs")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from benchmarks import _common as C  # noqa: PLC0415

    load_start = C.load()
    env = C.environment("smollm2-135m-instruct")
    env.pop("omp_wait_policy", None)
    env.pop("omp_wait_policy_set_by", None)
    base_env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    hogs = [subprocess.Popen([sys.executable, "-c", HOG], env={**base_env, "OMP_NUM_THREADS": "2"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(args.contend)]
    runs = []
    try:
        time.sleep(2 if hogs else 0)
        for rep in range(args.reps):
            order = ("default", "PASSIVE") if rep % 2 == 0 else ("PASSIVE", "default")
            for policy in order:
                child_env = dict(base_env) if policy == "default" else {**base_env, "OMP_WAIT_POLICY": "PASSIVE"}
                with C.Timer() as t:
                    out = subprocess.run([sys.executable, "-c", CHILD, str(args.n), str(args.max_new_tokens),
                                          C.DEFAULT_DATA], cwd=C.REPO, env=child_env, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-2000:])
                r = json.loads(out.stdout.strip().splitlines()[-1])
                runs.append({"policy": policy, "rep": rep, "tokens_per_s": r["tokens"] / r["seconds"], **r,
                             **t.record()})
                print(f"rep {rep} {policy:8s}: {r['tokens'] / r['seconds']:.1f} tok/s "
                      f"(load {t.load_before[0]} -> {t.load_after[0]})", file=sys.stderr, flush=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    med = {pol: C.median([r["tokens_per_s"] for r in runs if r["policy"] == pol]) for pol in ("default", "PASSIVE")}
    doc = {"benchmark": "omp_wait", "what": __doc__.strip().splitlines()[0],
           "setup": {"model": "smollm2-135m-instruct", "task": "gsm8k", "n_prompts": args.n,
                     "max_new_tokens": args.max_new_tokens, "reps": args.reps, "background_hogs": args.contend,
                     "torch_threads": "default (all cores)"},
           "environment": env, "median_tokens_per_s": med, "ratio_passive_over_default": med["PASSIVE"] / med["default"],
           "runs": runs, "load_start": load_start, "load_end": C.load()}
    name = "omp_wait" if not args.contend else f"omp_wait_contend{args.contend}"
    path = C.write_result(name, doc, args.out)
    print(C.table([(k, v) for k, v in med.items()], ["OMP_WAIT_POLICY", "median tok/s"]))
    print(f"PASSIVE / default: {doc['ratio_passive_over_default']:.2f}x with {args.contend} background hogs; "
          f"load {load_start} -> {doc['load_end']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

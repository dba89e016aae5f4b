"""bf16 vs fp32 matmul speed on this CPU, at a model's linear-layer shapes.

    python -m benchmarks.cpu_dtype                          # Qwen2.5-1.5B's shapes, rows 1 / 32 / 512
    python -m benchmarks.cpu_dtype --rows 32 --reps 9 --seconds 0.5

The qwen-code recipes generate and train in bf16 because on the AVX512-BF16 CPUs they were sized on, bf16 ran
about twice as fast as fp32 (benchmarks/results/generation_dtype_*.json, training_precision_*.json). A CPU without
bf16 instructions (no avx512_bf16 / amx_bf16, e.g. a Zen 3 EPYC) emulates them and can be several times slower
than fp32 instead: `repro doctor` names which this machine is, and `repro run` warns. This measures the ratio with
`torch.nn.functional.linear` (the op behind HF training and scoring), fp32 and bf16 arms interleaved, alternating,
medians of `--reps` timed blocks of `--seconds` each, at decode-like (1, 32 rows) and prefill-like (512) shapes.
"""
from __future__ import annotations

import argparse
import time

from benchmarks._common import Timer, environment, interleaved, median, table, write_result

# (in, out) features of Qwen2.5-1.5B's linear layers: q/o projection, the MLP's up/gate and down projections
SHAPES = {"attn 1536x1536": (1536, 1536), "mlp up 1536x8960": (1536, 8960), "mlp down 8960x1536": (8960, 1536)}


def _arm(x, w, seconds: float):
    """One arm: `linear(x, w)` called for `seconds`, as many times as fit; its GFLOP/s."""
    import torch  # noqa: PLC0415

    torch.nn.functional.linear(x, w)                    # warm: the first call picks its kernel
    flops = 2 * x.shape[0] * x.shape[1] * w.shape[0]

    def timed(rep: int) -> dict:
        calls = 0
        with Timer() as t:
            while time.perf_counter() - t.t0 < seconds:
                torch.nn.functional.linear(x, w)
                calls += 1
        return {**t.record(), "calls": calls, "gflops": flops * calls / t.seconds / 1e9}
    return timed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 32, 512], help="rows of the input (tokens at once)")
    ap.add_argument("--reps", type=int, default=5, help="timed blocks per arm and shape")
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one timed block")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/cpu_dtype.json)")
    args = ap.parse_args(argv)

    import torch  # noqa: PLC0415

    env = environment()
    rows_out, records = [], []
    for rows in args.rows:
        for label, (n_in, n_out) in SHAPES.items():
            data = {}
            for dt in (torch.float32, torch.bfloat16):
                data[str(dt).removeprefix("torch.")] = (torch.randn(rows, n_in, dtype=dt),
                                                        torch.randn(n_out, n_in, dtype=dt))

            runs = interleaved({name: _arm(*data[name], args.seconds) for name in data}, args.reps)
            med = {name: median([r["gflops"] for a, _, r in runs if a == name]) for name in data}
            ratio = med["bfloat16"] / med["float32"]
            records.append({"rows": rows, "shape": label, "in": n_in, "out": n_out, "median_gflops": med,
                            "bf16_over_fp32": round(ratio, 3),
                            "runs": [{"arm": a, "rep": rep, **r} for a, rep, r in runs]})
            rows_out.append([rows, label, f"{med['float32']:.1f}", f"{med['bfloat16']:.1f}", f"{ratio:.2f}x"])
    print(table(rows_out, ["rows", "shape", "fp32 GFLOP/s", "bf16 GFLOP/s", "bf16 / fp32"]))
    path = write_result("cpu_dtype", {"environment": env, "torch_threads": torch.get_num_threads(),
                                      "settings": vars(args), "results": records}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

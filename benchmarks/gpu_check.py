"""GPU check, for the day a GPU is lent: one SmolLM2 cell end to end on CUDA in bf16 (tiny sizes), plus the
GPU-only numerics the CPU tests cannot reach. Prints PASS / FAIL / SKIP per check, writes a JSON, exits 1 on a FAIL.

Needs only what the accelerator machine has: torch, transformers, peft, accelerate (and pyyaml, numpy, scipy, tqdm,
which its image holds). No vLLM, no lm-eval, no datasets, no internet: generation is the HF backend, and the
benchmarks are left out of the cell (``lm_eval`` checks run only where it is installed). Under 10 minutes on one
GPU (SmolLM2-135M; the budget is mostly imports and model loads).

What it needs on that machine (see ../shared/docs/models.md for getting files there):
  --model   a converted HF checkpoint folder of SmolLM2-135M-Instruct (``python -m repro models fetch
            smollm2-135m-instruct`` prints it here; ~540 MB in fp32, carried in <= 60 MiB chunks) or a registered name
  --data-dir  a folder holding ``squad/`` and ``SHA256SUMS`` from ../shared/data (1.1 MB)

    python -m benchmarks.gpu_check --model PATH --data-dir DATA            # on the GPU machine
    python -m benchmarks.gpu_check --device cpu --n 4 --data-dir ../shared/data  # same path on CPU (fp32), ~6 min

Without CUDA and without ``--device cpu`` it prints "no CUDA" and exits 0: there is nothing to check.

Checks:
  device          CUDA device, bf16 support (cpu: the dry run says so)
  load            the model loads in bf16 on the GPU (fp32 on CPU), as repro.runtime.models.load chooses
  generate        HF batched greedy generation: every output decoded, valid finish reasons, tokens/s; agreement
                  with one-prompt-at-a-time decoding is reported (bf16 batching may flip near-ties; not a pass/fail)
  scoring         per-token log-probs of the bf16 model within 0.1 nats (mean |diff|) of an fp32 copy: the upcast
                  scoring path (repro.runtime.scoring) on real bf16 logits
  hf_stage        GPU memory a dropped model held is returned after repro.runtime.generate.hf_stage (the HF side of
                  the vLLM memory plan; vLLM's own sleep/wake needs vLLM and stays unchecked here)
  cell            base, sft and s3ft cells of a tiny SQuAD recipe through the real driver (CellRunner): targets,
                  LoRA training with bf16 autocast, in-domain evaluation, forgetting signal; finite numbers, adapter
                  saved, training on the GPU, result written (and schema-valid where jsonschema is installed)
  lm_eval         only if lm_eval is importable and the data has hellaswag/: HFLM vs the packed backend on bf16
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# before torch starts (benchmarks/_common.py): OpenMP spin-waiting on a shared CPU slows small kernels many times
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_MODEL = "smollm2-135m-instruct"
SCORING_TOL_NATS = 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF folder or registered name (default %(default)s)")
    p.add_argument("--data-dir", default=os.environ.get("S3FT_DATA_DIR", str(REPO.parent / "shared" / "data")))
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: a dry run of the same code path without a GPU (fp32, hides CUDA from torch)")
    p.add_argument("--n", type=int, default=16,
                   help="SQuAD examples per split (default %(default)s; the CPU dry run here used 4)")
    p.add_argument("--out", default=None, help="JSON report path (default: a temporary folder's gpu_check.json)")
    return p.parse_args(argv)


class Report:
    def __init__(self) -> None:
        self.checks: list[dict] = []

    def run(self, name: str, fn: Callable[[], dict | str | None]) -> Any:
        t0 = time.perf_counter()
        try:
            detail = fn()
            status = "SKIP" if isinstance(detail, str) and detail.startswith("skipped") else "PASS"
        except Exception as e:  # noqa: BLE001 - every failure is reported, the other checks still run
            status, detail = "FAIL", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        seconds = round(time.perf_counter() - t0, 1)
        self.checks.append({"check": name, "status": status, "seconds": seconds, "detail": detail})
        shown = detail if isinstance(detail, str) else json.dumps(detail, default=str)
        print(f"{status:4}  {name:9} {seconds:6.1f} s  {shown[:400]}", flush=True)
        return detail

    @property
    def failed(self) -> bool:
        return any(c["status"] == "FAIL" for c in self.checks)


def check(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""     # before torch starts: every stage picks the CPU on its own
    import torch  # noqa: PLC0415

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA: nothing to check here (python -m benchmarks.gpu_check --device cpu runs the code path on CPU)")
        return 0
    torch.manual_seed(0)
    from repro.runtime import models  # noqa: PLC0415

    device = args.device
    data_dir = Path(args.data_dir).expanduser()
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    out = Path(args.out) if args.out else work / "gpu_check.json"
    rep = Report()
    state: dict[str, Any] = {}
    print(f"gpu_check: model {args.model}, device {device}, data {data_dir}, work {work}", flush=True)

    def device_info() -> dict:
        if device == "cpu":
            return {"device": "cpu (dry run: fp32, no GPU numerics)", "torch": torch.__version__}
        props = torch.cuda.get_device_properties(0)
        check(torch.cuda.is_bf16_supported(), "bf16 not supported on this GPU")
        return {"device": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
                "cuda": torch.version.cuda}

    def load() -> dict:
        model, tok = models.load(args.model, device=device)
        want = torch.bfloat16 if device == "cuda" else torch.float32
        dtypes = {p.dtype for p in model.parameters()}
        devices = {p.device.type for p in model.parameters()}
        check(dtypes == {want}, f"parameter dtypes {dtypes}, expected {want}")
        check(devices == {device}, f"parameters on {devices}, expected {device}")
        state["model"], state["tok"] = model, tok
        return {"dtype": str(want), "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}

    def prompts() -> list:
        from evals.data import seeded_subset  # noqa: PLC0415
        from evals.tasks import get_task  # noqa: PLC0415

        task = get_task("squad")
        exs = seeded_subset(task.load_split("test", data_dir).examples, args.n, 1234)
        return [task.predict_messages(ex) for ex in exs], task

    def generate() -> dict:
        from repro.runtime.generate import DecodingParams, HFGenerator  # noqa: PLC0415

        msgs, task = prompts()
        params = DecodingParams(max_new_tokens=48, stop=task.stop)
        batched = HFGenerator(args.model, batch_size=len(msgs), model_obj=state["model"])
        t0 = time.perf_counter()
        outs = batched.generate(msgs, params, tag="gpu_check", progress=False)
        seconds = time.perf_counter() - t0
        check(len(outs) == len(msgs), "one output per prompt")
        check(all(o.finish_reason in ("eos", "stop", "length") for o in outs), "finish reasons")
        check(all(o.n_output_tokens > 0 for o in outs), "every prompt generated tokens")
        single = HFGenerator(args.model, batch_size=1, model_obj=state["model"])
        one = single.generate(msgs, params, tag="gpu_check", progress=False)
        same = sum(a.text == b.text for a, b in zip(outs, one))
        state["answers"] = [(m, o.text) for m, o in zip(msgs, one) if o.finish_reason != "length" and o.text]
        return {"prompts": len(msgs), "output_tokens": sum(o.n_output_tokens for o in outs),
                "tokens_per_s": round(sum(o.n_output_tokens for o in outs) / seconds, 1),
                "batched_equals_one_at_a_time": f"{same}/{len(msgs)}", "first": outs[0].text[:80]}

    def scoring() -> dict:
        from repro.runtime.scoring import score_responses  # noqa: PLC0415

        items = state.get("answers") or []
        if not items:
            items = [(m, "I do not know.") for m in prompts()[0]]
        model, tok = state["model"], state["tok"]
        low = score_responses(model, tok, items, progress=False)
        import copy  # noqa: PLC0415

        ref_model = copy.deepcopy(model).float()
        ref = score_responses(ref_model, tok, items, progress=False)
        del ref_model
        diffs = [abs(a.sum - b.sum) / max(a.n_tokens, 1) for a, b in zip(low, ref)]
        check(all(math.isfinite(s.sum) for s in low), "finite log-probs")
        mean = sum(diffs) / len(diffs)
        check(mean < SCORING_TOL_NATS, f"mean |logp diff| per token {mean:.4f} >= {SCORING_TOL_NATS}")
        return {"items": len(items), "mean_abs_diff_per_token": round(mean, 5),
                "max_abs_diff_per_token": round(max(diffs), 5), "tolerance": SCORING_TOL_NATS}

    def hf_stage_memory() -> dict | str:
        if device == "cpu":
            return "skipped: CPU (no device memory to return)"
        from repro.runtime.generate import hf_stage  # noqa: PLC0415

        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        with hf_stage():
            extra, _ = models.load(args.model, device="cuda")
            held = torch.cuda.memory_allocated() - before
            del extra
        after = torch.cuda.memory_allocated()
        check(held > 0, "the second model took no device memory")
        check(after - before < 1 << 20, f"{(after - before) / 2**20:.1f} MiB still held after the stage")
        return {"held_mib": round(held / 2**20, 1), "left_mib": round((after - before) / 2**20, 3),
                "reserved_mib_after": round(torch.cuda.memory_reserved() / 2**20, 1)}

    def cell() -> dict:
        from repro.driver.cell import Cell, CellRunner  # noqa: PLC0415
        from repro.driver.recipes import load_recipe  # noqa: PLC0415

        state.pop("model", None)                   # the cell loads its own models
        recipe = load_recipe("quick")
        recipe.name, recipe.model = "gpu_check", args.model
        recipe.tasks = {"squad": {"train": args.n, "test": args.n, "max_new_tokens": 48,
                                  "paraphrase_max_new_tokens": 48, "judge": "match", "headline_metric": "f1"}}
        recipe.train = {**recipe.train, "epochs": 1, "batch_size": 4}
        recipe.generation = {"backend": "hf", "batch_size": 16}
        recipe.evaluation = {"cross_task": False, "forgetting_prompts": 4}
        runner = CellRunner(recipe, data_dir=data_dir, work_root=work / "runs", results_root=work / "results",
                            progress=False)
        found: dict[str, Any] = {}
        for method in ("base", "sft", "s3ft"):
            c = Cell("gpu_check", "squad", method, 0)
            result = runner.run(c)
            path = runner.paths(c)["result"] / "result.json"
            check(path.is_file(), f"{method}: no result.json")
            ind = result["in_domain"]
            found[method] = {"containment": round(ind["acc,none"], 4), "f1": round(ind["reading"]["f1"], 4)}
            if method != "base":
                log = json.loads((runner.paths(c)["train"] / "train_log.json").read_text())
                losses = [s["loss"] for s in log["steps"]]
                check(losses and all(math.isfinite(x) for x in losses), f"{method}: non-finite training loss")
                check(log["device"].startswith(device), f"{method}: trained on {log['device']}, not {device}")
                check((runner.paths(c)["train"] / "adapter" / "adapter_model.safetensors").is_file(),
                      f"{method}: no adapter saved")
                found[method].update({"steps": len(losses), "first_loss": round(losses[0], 4),
                                      "final_loss": round(losses[-1], 4), "device": log["device"],
                                      "mixed_precision": log.get("mixed_precision")})
                fs = result["forgetting_signal"]
                signal = {k: fs[k] for k in ("kl_base_tuned_per_token", "nll_gold_tuned_per_token",
                                             "nll_gold_base_per_token")}
                check(all(isinstance(v, float) and math.isfinite(v) for v in signal.values()),
                      f"{method}: forgetting signal {signal}")
                check(signal["kl_base_tuned_per_token"] > 0, f"{method}: KL(base||tuned) is 0: no training effect")
                found[method].update({k: round(v, 5) for k, v in signal.items()})
        try:
            from repro.driver.schema import validate_result  # noqa: PLC0415

            errors = {m: validate_result(runner.paths(Cell("gpu_check", "squad", m, 0))["result"] / "result.json")
                      for m in found}
            check(not any(errors.values()), f"schema: {errors}")
            found["schema"] = "valid"
        except ImportError:
            found["schema"] = "not checked (jsonschema not installed)"
        return found

    def lm_eval_check() -> dict | str:
        try:
            import lm_eval  # noqa: F401, PLC0415
        except ImportError:
            return "skipped: lm_eval not installed"
        if not (data_dir / "hellaswag").is_dir():
            return "skipped: no hellaswag/ in the data directory"
        from evals.benchmarks import BenchmarkSpec, evaluate_benchmarks  # noqa: PLC0415

        model, tok = models.load(args.model, device=device)
        got = {b: evaluate_benchmarks(model, tok, [BenchmarkSpec("hellaswag", limit=8)], data_dir=data_dir,
                                      seed=1234, backend=b) for b in ("hf", "packed")}
        lp = {b: [s["logp_correct"] for s in g["samples"]["hellaswag"]] for b, g in got.items()}
        diff = max(abs(a - b) for a, b in zip(lp["hf"], lp["packed"]))
        check(diff < 0.05, f"HFLM vs packed logp_correct differ by up to {diff:.4f} in bf16")
        return {"items": len(lp["hf"]), "max_abs_diff": round(diff, 5)}

    rep.run("device", device_info)
    rep.run("load", load)
    if "model" in state:
        rep.run("generate", generate)
        rep.run("scoring", scoring)
    rep.run("hf_stage", hf_stage_memory)
    rep.run("cell", cell)
    rep.run("lm_eval", lm_eval_check)

    passed = sum(c["status"] == "PASS" for c in rep.checks)
    print(f"gpu_check: {passed} passed, {sum(c['status'] == 'FAIL' for c in rep.checks)} failed, "
          f"{sum(c['status'] == 'SKIP' for c in rep.checks)} skipped on {device}; report {out}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device, "model": args.model, "checks": rep.checks}, indent=2,
                              default=str))
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())

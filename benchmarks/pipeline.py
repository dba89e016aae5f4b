"""Whole-pipeline cost per method: SFT vs S3FT through the real driver, cold and warm.

    python -m benchmarks.pipeline                                  # mini, shrunk to ~10 minutes (see MINI_OVERRIDES)
    python -m benchmarks.pipeline --preset mini --task squad key=value ...

Every step below is one `python -m repro ...` subprocess, the way users run the grid, timed from outside (process
wall: start-up, model loads, everything) and read back from the cell's result.json (provenance.wall_time_s: the
driver's own stage timings).

  base      `repro run --methods base` in a fresh work dir: the base cell every method depends on (its test-set
            answers feed the forgetting signal, its benchmark scores the drops). Shared by all methods; reported
            once, then the work and results dirs are snapshotted: every scenario below starts from a copy.
  COLD      each method alone from the snapshot, empty generation cache beyond the base cell's:
            `repro run --methods sft` and, from a second copy, `repro run --methods s3ft`
  WARM      the situation of a grid that also runs SSR: from a third copy, `repro build --method ssr` first (it
            generates and judges the base model's answers to the training prompts and scores them; reported as
            shared work, paid once for every method that reads it), then `repro run --methods sft` and
            `repro run --methods s3ft`. S3FT's predictions, verdicts and log-probs of own answers/gold come from the
            cache; its paraphrases, their judging and scoring, its training and all evaluation are done again
            (adapters are trained anew, so nothing of the evaluation is cached).

Reported per method and scenario: predict, judge, paraphrase, score (targets_* stages), train, evaluate (in-domain,
forgetting, benchmarks), the cell total of the driver, the process wall, and the ratio S3FT/SFT of both, cold and
warm. Load averages around every subprocess are recorded; cells run one after another, never concurrently.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks import _common as C  # noqa: E402  (sets OMP_WAIT_POLICY for the subprocesses too)

# Default: the mini preset (SmolLM2-135M-Instruct on CPU) shrunk so the seven driver runs below take ~10 minutes on
# 2 CPU cores: SQuAD only, 16 train / 16 test items, 8 forgetting prompts, two small lm-eval subsets; mini's
# generation lengths, training hyper-parameters and seed are kept. Evaluation is the part shrunk most (mini scores
# every model on 120 SQuAD items and five benchmarks), and evaluation costs SFT and S3FT the same, so the S3FT/SFT
# ratio measured here is higher than mini's own. The packing budget is the CPU setting (512 tokens per packed row).
MINI_OVERRIDES = ["tasks={squad: {train: 16, test: 16, max_new_tokens: 32, paraphrase_max_new_tokens: 48, "
                  "judge: match}}", "evaluation.cross_task=[squad]", "evaluation.forgetting_prompts=8",
                  "evaluation.benchmarks={hellaswag: {limit: 8}, arc_challenge: {limit: 8}}",
                  "train.max_tokens_per_micro_batch=512"]
# Used when there is no mini preset: smoke's grid on the real SmolLM2 with similar sizes.
FALLBACK_PRESET = "smoke"
FALLBACK_OVERRIDES = ["model=smollm2-135m-instruct", "tasks={squad: {train: 16, test: 16}}", "train.epochs=2",
                      "train.batch_size=8", "train.learning_rate=1.0e-4", "train.max_tokens_per_micro_batch=512",
                      "evaluation.forgetting_prompts=8"]

STAGES = {"predict": ["targets_predict"], "judge": ["targets_judge"], "paraphrase": ["targets_paraphrase"],
          "score": ["targets_score"], "targets": ["targets"], "train": ["train"],
          "evaluate": ["eval_tasks", "forgetting", "eval_general", "eval_general_base"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help="default: mini when it exists, else smoke with SmolLM2 overrides")
    p.add_argument("--task", default="squad")
    p.add_argument("--data-dir", default=C.DEFAULT_DATA)
    p.add_argument("--work-root", default=str(C.REPO / "runs" / "bench-pipeline"),
                   help="scratch folder (emptied first; runs/ is git-ignored)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folders afterwards")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/pipeline.json)")
    p.add_argument("overrides", nargs="*", help="recipe overrides key=value, passed to every driver call")
    return p.parse_args(argv)


def driver(args_list: list[str], log_path: Path) -> dict:
    cmd = [sys.executable, "-m", "repro", *args_list]
    with C.Timer() as t, open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=C.REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"driver failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    print(f"  {' '.join(args_list[:6])} ... {t.seconds:.1f} s (load {t.load_before[0]} -> {t.load_after[0]})",
          file=sys.stderr, flush=True)
    return {"cmd": ["python", "-m", "repro", *args_list], **t.record()}


def stages(result: dict) -> dict:
    """The driver's stage times, grouped. The base model is loaded lazily inside the first target stage that needs
    it (predict for S3FT/SSR, score for SFT); that load gets its own column and is taken out of that stage."""
    wall = result["provenance"]["wall_time_s"]
    out = {name: round(sum(wall.get(k, 0.0) for k in keys), 3) for name, keys in STAGES.items()}
    out["load_model"] = wall.get("targets_load_model", 0.0)
    for k in ("predict", "paraphrase", "score"):
        if out[k] > 0:
            out[k] = round(max(out[k] - out["load_model"], 0.0), 3)
            break
    out["cell_total"] = wall["total"]
    out["raw"] = wall
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from repro.driver.recipes import available_presets, load_recipe  # noqa: PLC0415

    if args.preset is not None:
        preset, overrides = args.preset, list(args.overrides)
    elif "mini" in available_presets():
        preset, overrides = "mini", [*MINI_OVERRIDES, *args.overrides]
    else:
        preset, overrides = FALLBACK_PRESET, [*FALLBACK_OVERRIDES, *args.overrides]
    recipe = load_recipe(preset, overrides)
    if args.task not in recipe.tasks:
        raise SystemExit(f"task {args.task} not in preset {preset} ({list(recipe.tasks)})")
    load_start = C.load()
    env = C.environment(recipe.model)

    root = Path(args.work_root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    common = ["--preset", preset, *overrides, "--data-dir", args.data_dir, "--quiet"]

    def run_cell(scenario: str, method: str) -> dict:
        w, r = root / scenario / "work", root / scenario / "results"
        info = driver(["run", "--tasks", args.task, "--methods", method, "--seeds", "0", *common,
                       "--work-dir", str(w), "--results-dir", str(r)], root / f"{scenario}-{method}.log")
        result = json.loads((r / recipe.name / args.task / method / "seed0" / "result.json").read_text())
        targets = result.get("targets") or {}
        return {"process": info, "stages": stages(result),
                "targets": {k: targets.get(k) for k in ("n_examples", "n_targets", "sources", "acceptance",
                                                          "generation_stats")},
                "training": {**{k: (result.get("training") or {}).get(k)
                                for k in ("trained_tokens", "seen_tokens", "trained_tokens_per_s", "total_steps",
                                          "final_loss")},
                             "micro_batch_budget": ((result.get("training") or {}).get("config") or {}).get(
                                 "max_tokens_per_micro_batch")},
                "in_domain_acc": result["in_domain"]["acc,none"],
                "adapter_fingerprint": result["provenance"].get("adapter_fingerprint")}

    def snapshot_to(scenario: str, source: str = "base") -> None:
        for sub in ("work", "results"):
            shutil.copytree(root / source / sub, root / scenario / sub)

    print(f"preset {preset} {' '.join(overrides)}; task {args.task}; model {recipe.model}", file=sys.stderr)
    print("base cell (shared):", file=sys.stderr)
    base = run_cell("base", "base")
    runs: dict[str, dict] = {"cold": {}, "warm": {}}
    print("cold:", file=sys.stderr)
    for method in ("sft", "s3ft"):
        snapshot_to(f"cold-{method}")
        runs["cold"][method] = run_cell(f"cold-{method}", method)
    print("warm (SSR's targets built first):", file=sys.stderr)
    snapshot_to("warm")
    shared = driver(["build", "--task", args.task, "--method", "ssr", *common, "--work-dir", str(root / "warm" / "work"),
                     "--results-dir", str(root / "warm" / "results")], root / "warm-ssr-build.log")
    for method in ("sft", "s3ft"):           # each from its own copy: neither method's work is cached for the other
        snapshot_to(f"warm-{method}", "warm")
        runs["warm"][method] = run_cell(f"warm-{method}", method)
    same_adapter = {sc: runs[sc]["sft"]["adapter_fingerprint"] == runs[sc]["s3ft"]["adapter_fingerprint"]
                    for sc in runs}

    ratios = {}
    for scenario in ("cold", "warm"):
        s, f = runs[scenario]["s3ft"], runs[scenario]["sft"]
        ratios[scenario] = {
            "cell_total": s["stages"]["cell_total"] / f["stages"]["cell_total"],
            "process_wall": s["process"]["seconds"] / f["process"]["seconds"],
            "targets_plus_train": ((s["stages"]["targets"] + s["stages"]["train"])
                                   / (f["stages"]["targets"] + f["stages"]["train"])),
        }
    doc = {
        "benchmark": "pipeline",
        "what": "wall time per stage of SFT and S3FT cells through the real driver, cold (empty caches) and warm "
                "(the base model's answers to the training prompts already generated, judged and scored by SSR)",
        "setup": {"preset": preset, "overrides": overrides, "task": args.task, "model": recipe.model,
                  "recipe": recipe.to_dict(),
                  "order": "base (snapshot); cold sft, cold s3ft (each from a copy of the snapshot); warm: ssr build "
                           "on a copy, then sft and s3ft each from a copy of that",
                  "stage_note": "targets = predict + judge + paraphrase + score + load_model (the base model is "
                                "loaded inside the first target stage; shown apart); cell_total = the driver's "
                                "targets + train + evaluate; process wall = the whole `python -m repro` call"},
        "environment": env,
        "base_cell": base,
        "shared_ssr_build": shared,
        "runs": runs, "ratio_s3ft_over_sft": ratios,
        "same_adapter_sft_s3ft": same_adapter,
        "target": {"ratio_at_most": 1.5, "met_cold": ratios["cold"]["cell_total"] <= 1.5,
                   "met_warm": ratios["warm"]["cell_total"] <= 1.5},
        "load_start": load_start, "load_end": C.load(),
    }
    path = C.write_result("pipeline", doc, args.out)

    cols = ["load_model", "predict", "judge", "paraphrase", "score", "targets", "train", "evaluate", "cell_total"]
    rows = []
    for scenario in ("cold", "warm"):
        for method in ("sft", "s3ft"):
            r = runs[scenario][method]
            rows.append((scenario, method, *[r["stages"][c] for c in cols], r["process"]["seconds"]))
    print(C.table(rows, ["scenario", "method", *cols, "process wall"]))
    print(f"\nbase cell (shared): cell {base['stages']['cell_total']:.1f} s, process {base['process']['seconds']:.1f} s; "
          f"SSR build (shared predictions, warm): {shared['seconds']:.1f} s")
    for scenario, r in ratios.items():
        print(f"S3FT / SFT {scenario}: {r['cell_total']:.2f}x cell total, {r['process_wall']:.2f}x process wall, "
              f"{r['targets_plus_train']:.2f}x targets+train (target <= 1.5x: "
              f"{'met' if r['cell_total'] <= 1.5 else 'MISSED'})")
    if any(same_adapter.values()):
        print("note: SFT and S3FT trained the same adapter (S3FT kept only gold targets), so their evaluations share "
              "cache entries only if they ran in one work dir; here every cell ran from its own copy")
    print(f"load average at start {load_start}, at end {doc['load_end']}; wrote {path}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Assembling one cell's result document (schema: repro/driver/schema/result.schema.json) and its per-item records.

The result holds every number a table needs with its uncertainty and provenance; items.jsonl.gz beside it holds
what those numbers were computed from (each response with its verdict, each benchmark item's score, each training
example's candidate log-probabilities), so the regression checks can recompute them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.stats import average_drop, drop_with_uncertainty
from repro.driver.schema import SCHEMA_VERSION
from repro.runtime import models, provenance
from repro.runtime.store import read_jsonl

if TYPE_CHECKING:
    from repro.driver.cell import Cell, CellRunner


def benchmark_items(general: dict, name: str) -> dict[Any, float]:
    """doc key -> primary-metric score of one benchmark's per-item samples."""
    metric = general["primary_metric"][name].split(",")[0]
    out = {}
    for s in general["samples"][name]:
        key = s["key"]              # "<subject>/<doc_id>" for MMLU, whose doc ids repeat across subjects
        out[key] = float(s[metric])
    return out


def compute_drops(base: dict, tuned: dict, *, seed: int = 0, headline: list[str] | None = None) -> dict:
    """Tuned minus base per benchmark (negative = forgetting) with paired-bootstrap CIs, the unweighted average
    over every benchmark (the extended average) and over the headline benchmarks (the paper's four: its "average
    drop", which the paper reports with the opposite sign, base - tuned), and per benchmark the mean change of
    log p(correct choice), tuned - base (a continuous per-item measure; negative = the model moved away)."""

    per, paired = {}, {}
    for name, metric in tuned["primary_metric"].items():
        if name not in base.get("primary_metric", {}):
            continue
        b, t = benchmark_items(base, name), benchmark_items(tuned, name)
        keys = sorted(set(b) & set(t), key=str)
        if set(b) != set(t):
            raise ValueError(f"benchmark {name}: base and tuned were scored on different items")
        bi, ti = [b[k] for k in keys], [t[k] for k in keys]
        d = drop_with_uncertainty(bi, ti, seed=seed)
        per[name] = {"metric": metric, "base": sum(bi) / len(bi), "tuned": sum(ti) / len(ti), **d}
        lb, lt = _logp_items(base, name), _logp_items(tuned, name)
        if lb and lt and set(lb) == set(lt):
            shift = [lt[k] - lb[k] for k in keys]
            per[name]["logp_correct_shift"] = {"mean": sum(shift) / len(shift), "n": len(shift)}
        paired[name] = (bi, ti)
    head = [n for n in (headline or []) if n in paired]
    return {"sign": "tuned - base (negative = forgetting)", "per_benchmark": per,
            "average_drop": average_drop(paired, seed=seed) if paired else None,
            "headline_benchmarks": head,
            "headline_average_drop": average_drop({n: paired[n] for n in head}, seed=seed) if head else None}


def _logp_items(general: dict, name: str) -> dict[Any, float]:
    """doc key -> log p(correct choice), when every item has one (results before this measure have none)."""
    vals = {s["key"]: s.get("logp_correct") for s in general["samples"][name]}
    return {} if any(v is None for v in vals.values()) else vals


def _strip(score: dict) -> dict:
    return {k: v for k, v in score.items() if k != "items"}


def assemble_result(runner: CellRunner, cell: Cell, summary: dict | None, targets_reused: bool,
                    train_log: dict | None, ev: dict) -> tuple[dict, list[dict]]:

    recipe = runner.recipe
    scores = ev["scores"]
    general = ev["general"]
    items: list[dict] = []
    for name, s in scores.items():
        items += [{"kind": "task", "task": name, **it} for it in s["items"]]
    if general is not None:
        for name, samples in general["samples"].items():
            items += [{"kind": "benchmark", "benchmark": name, **smp} for smp in samples]
    if summary is not None:
        for c in _candidates(runner.paths(cell)["targets"] / "candidates.jsonl"):
            items.append({"kind": "candidates", "id": c["id"],
                          "logp": {s: v["logp"] for s, v in c["candidates"].items() if "logp" in v},
                          "accepted": {s: v["accepted"] for s, v in c["candidates"].items()},
                          "finish_reason": {s: v.get("finish_reason") for s, v in c["candidates"].items()},
                          "rejected_by": {s: v.get("rejected_by") for s, v in c["candidates"].items()}})

    drops = None
    if general is not None and ev["base_general"] is not None:
        drops = compute_drops(ev["base_general"], general, seed=cell.seed,
                              headline=list(runner.config.evaluation.headline_benchmarks))

    wall: dict[str, float] = {}
    if summary is not None:
        for k, v in summary.get("seconds", {}).items():
            if k != "total":
                wall[f"targets_{k}"] = v
        wall["targets"] = summary.get("seconds", {}).get("total", 0.0)
    if train_log is not None:
        wall["train"] = train_log.get("wall_time_s", 0.0)
    wall.update({k: round(v, 3) for k, v in ev["seconds"].items()})
    for name, s in scores.items():
        wall[f"eval_{name}"] = round(sum(s["seconds"].values()), 3)
    wall["total"] = round(sum(v for k, v in wall.items() if k in ("targets", "train") or k in ev["seconds"]), 3)

    task_prov = {}
    for name in scores:
        task_prov[name] = {"test": runner.split(name, "test").provenance(),
                           "test_n": scores[name]["n"], **runner.task(name).describe()}
    if summary is not None:
        task_prov[cell.task]["train"] = runner.split(cell.task, "train").provenance()
        task_prov[cell.task]["train_n"] = summary["n_examples"]
    generator = ev["generator"]
    training = None
    if train_log is not None:
        training = {k: v for k, v in train_log.items() if k != "model"}
    result = {
        "schema_version": SCHEMA_VERSION,
        "cell": {"preset": cell.preset, "task": cell.task, "method": cell.method, "seed": cell.seed,
                 "config_hash": runner.cell_hash(cell)},
        "in_domain": _strip(scores[cell.task]),
        "cross_task": {n: _strip(s) for n, s in scores.items()},
        "generalization": ({k: v for k, v in general.items() if k not in ("samples", "texts")}
                           if general is not None else None),
        "drops": drops,
        "forgetting_signal": ev["forgetting"],
        "targets": ({**summary, "reused_from_earlier_seed": targets_reused} if summary is not None else None),
        "training": training,
        "items": {"path": "items.jsonl.gz", "sha256": "", "counts": _counts(items)},
        "provenance": {
            **provenance.provenance(),
            "model": models.describe(recipe.model),
            "adapter_fingerprint": generator.get("adapter"),
            "data": task_prov,
            "chat_template_sha": generator.get("chat_template_sha"),
            "generation_backend": generator.get("backend"),
            # serve_adapters: how vLLM served the tuned model ("lora", "merged"); absent for HF and base cells
            "generation_engine": {k: generator.get(k) for k in ("engine", "dtype", "serve_adapters")
                                  if k != "serve_adapters" or generator.get(k)},
            "prompt_templates": {n: runner.task(n).template_version for n in scores},
            "judges": {n: runner.task(n).judge_version for n in scores},
            "decoding": {n: runner.decoding(n, "predict").to_dict() for n in scores},
            "hyperparameters": runner.train_config(cell).to_dict() if training is not None else None,
            "recipe": recipe.to_dict(),
            "wall_time_s": wall,
        },
    }
    return result, items


def _counts(items: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        out[it["kind"]] = out.get(it["kind"], 0) + 1
    return out


def _candidates(path: Path) -> list[dict]:
    return read_jsonl(path) if path.is_file() else []

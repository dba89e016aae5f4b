"""Building a method's training targets, and the artefacts that record them.

A method's ``build_targets(ctx)`` asks the context for candidates (the base model's own predictions, its
paraphrases of gold, the gold answers), each judged, and returns the records to train on. Everything the context
generates or judges goes through the cache, so SFT, SSR, S3FT and SDFT on one task share one set of base
predictions, and an interrupted build picks up where it stopped.

Artefacts in the output folder:
  targets.jsonl          the training set: id, prompt (chat messages), target, source in {model, paraphrase, gold}
  candidates.jsonl       every example's candidates with verdicts and log p under the base model (Table 1 / Fig. 2)
  targets_summary.json   counts and shares per source (Table 3), acceptance rates, log-p summary, stage timings
"""
from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals.judges.cached import judge_cached
from evals.judges.filters import FILTER_VERSION, paraphrase_rejection
from evals.tasks.base import Task
from repro.cache import GenerationCache
from repro.generate import DecodingParams, Generator
from repro.store import atomic_write_json, atomic_write_jsonl

SOURCES = ("model", "paraphrase", "gold")


@dataclass
class Candidate:
    source: str                  # "model" | "paraphrase" | "gold"
    text: str
    accepted: bool               # judged correct (and, for paraphrases, clean); gold is always accepted
    reason: str
    finish_reason: str | None = None


@dataclass
class TargetRecord:
    id: str
    prompt: list[dict]
    target: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TargetContext:
    """What a method sees: the task, its training examples, and judged candidates on demand."""

    task: Task
    examples: list[dict]
    generator_factory: Callable[[], Generator]
    predict_params: DecodingParams
    paraphrase_params: DecodingParams
    cache: GenerationCache | None = None
    progress: bool = True
    seen: dict[str, dict[str, Candidate]] = field(default_factory=lambda: defaultdict(dict))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _generator: Generator | None = None
    _stats_at_start: dict | None = None

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            t0 = time.perf_counter()
            self._generator = self.generator_factory()
            self.seconds["load_model"] += time.perf_counter() - t0
            # The generator may be shared across builds; count only this build's work.
            self._stats_at_start = asdict(self._generator.stats)
        return self._generator

    def generation_stats(self) -> dict | None:
        if self._generator is None:
            return None
        now = asdict(self._generator.stats)
        return {k: now[k] - (self._stats_at_start or {}).get(k, 0) for k in now}

    def _judged(self, source: str, examples: Sequence[dict], messages: list, params: DecodingParams,
                tag: str) -> list[Candidate]:
        if not examples:
            return []
        t0 = time.perf_counter()
        outs = self.generator.generate(messages, params, tag=tag, progress=self.progress)
        self.seconds[source if source != "model" else "predict"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        verdicts = judge_cached(self.task, examples, [o.text for o in outs], self.cache, progress=self.progress)
        self.seconds["judge"] += time.perf_counter() - t0
        cands = []
        for ex, out, v in zip(examples, outs, verdicts):
            accepted, reason = v.correct, v.reason
            if source == "paraphrase" and accepted:
                rejection = paraphrase_rejection(out.text)
                task_rule = getattr(self.task, "paraphrase_rejection", None)   # a task's own validity rule
                if rejection is None and task_rule is not None:
                    rejection = task_rule(ex, out.text)
                if rejection:
                    accepted, reason = False, f"filtered: {rejection}"
            cand = Candidate(source, out.text, accepted, reason, out.finish_reason)
            self.seen[ex["id"]][source] = cand
            cands.append(cand)
        return cands

    def predictions(self, examples: Sequence[dict]) -> list[Candidate]:
        """The base model's own answers to the training prompts, judged."""
        return self._judged("model", examples, [self.task.predict_messages(ex) for ex in examples],
                            self.predict_params, f"{self.task.name}.predict.{self.task.template_version}")

    def paraphrases(self, examples: Sequence[dict]) -> list[Candidate]:
        """The base model's rewrites of the gold answers (question + gold in the prompt), judged and filtered."""
        return self._judged("paraphrase", examples, [self.task.paraphrase_messages(ex) for ex in examples],
                            self.paraphrase_params, f"{self.task.name}.paraphrase.{self.task.template_version}")

    def gold(self, ex: dict) -> Candidate:
        cand = Candidate("gold", self.task.gold_response(ex), True, "gold")
        self.seen[ex["id"]]["gold"] = cand
        return cand

    def target(self, ex: dict, cand: Candidate) -> TargetRecord:
        return TargetRecord(ex["id"], self.task.train_messages(ex), cand.text, cand.source)


def _logp_stats(values: list[dict]) -> dict:
    if not values:
        return {"n": 0}
    sums = [v["sum"] for v in values]
    per = [v["per_token"] for v in values]
    return {"n": len(values), "mean_sum": statistics.fmean(sums), "median_sum": statistics.median(sums),
            "mean_per_token": statistics.fmean(per), "median_per_token": statistics.median(per),
            "mean_tokens": statistics.fmean(v["n_tokens"] for v in values)}


def summarize(method_id: str, ctx: TargetContext, records: list[TargetRecord], candidates: list[dict]) -> dict:
    n = len(ctx.examples)
    counts = Counter(r.source for r in records)
    sources = {s: {"count": counts.get(s, 0), "share": counts.get(s, 0) / len(records) if records else 0.0}
               for s in SOURCES}
    acceptance: dict[str, Any] = {}
    for source in ("model", "paraphrase"):
        cands = [c[source] for c in ctx.seen.values() if source in c]
        if cands:
            acceptance[source] = {
                "generated": len(cands), "accepted": sum(c.accepted for c in cands),
                "rate": sum(c.accepted for c in cands) / len(cands),
                "truncated": sum(c.finish_reason == "length" for c in cands),
                "top_rejections": Counter(_reason_kind(c.reason) for c in cands if not c.accepted).most_common(5)}
    logp: dict[str, Any] = {}
    for source in SOURCES:
        vals = [c["candidates"][source]["logp"] for c in candidates if source in c["candidates"]]
        logp[source] = _logp_stats(vals)
        if source != "gold":
            logp[f"{source}_accepted"] = _logp_stats([c["candidates"][source]["logp"] for c in candidates
                                                      if source in c["candidates"]
                                                      and c["candidates"][source]["accepted"]])
    both = [c for c in candidates if "model" in c["candidates"] and "gold" in c["candidates"]]
    if both:
        diffs = [c["candidates"]["model"]["logp"]["sum"] - c["candidates"]["gold"]["logp"]["sum"] for c in both]
        logp["model_minus_gold"] = {"n": len(diffs), "mean_sum_diff": statistics.fmean(diffs),
                                    "share_model_higher": sum(d > 0 for d in diffs) / len(diffs)}
    return {
        "method": method_id, "task": ctx.task.describe(), "filter_version": FILTER_VERSION,
        "n_examples": n, "n_targets": len(records), "dropped": n - len(records),
        "dropped_share": (n - len(records)) / n if n else 0.0,
        "sources": sources, "acceptance": acceptance, "logp": logp,
        "decoding": {"predict": ctx.predict_params.to_dict(), "paraphrase": ctx.paraphrase_params.to_dict()},
        "generator": ctx._generator.describe() if ctx._generator else None,
        "generation_stats": ctx.generation_stats(),
        "seconds": {k: round(v, 3) for k, v in ctx.seconds.items()},
    }


def _reason_kind(reason: str) -> str:
    """Group judge reasons ("12 != gold 18 (answer-is)") into kinds ("!= gold (answer-is)") for the summary."""
    import re  # noqa: PLC0415

    return re.sub(r"'[^']*'|\"[^\"]*\"|-?\d[\d,.]*", "#", reason)[:60]


def build(method_id: str, ctx: TargetContext, out_dir: Path, *, score: bool = True, extra: dict | None = None) -> dict:
    """Run a method's target builder, score every candidate under the base model, write the three artefacts."""
    from methods.registry import get_method  # noqa: PLC0415
    from repro.scoring import score_responses  # noqa: PLC0415

    method = get_method(method_id)
    t_start = time.perf_counter()
    records: list[TargetRecord] = method.build_targets(ctx)
    for r in records:
        if not r.target.strip():
            raise ValueError(f"method {method_id} produced an empty target for {r.id}")
    by_id = {ex["id"]: ex for ex in ctx.examples}
    if score and method.TRAINS:
        for ex in ctx.examples:             # gold log p is the reference every summary compares against
            ctx.seen[ex["id"]].setdefault("gold", Candidate("gold", ctx.task.gold_response(ex), True, "gold"))
    items, where = [], []
    for ex_id, cands in ctx.seen.items():
        for source, cand in cands.items():
            items.append((ctx.task.train_messages(by_id[ex_id]), cand.text))
            where.append((ex_id, source))
    logps: dict[tuple[str, str], dict] = {}
    if score and items:
        t0 = time.perf_counter()
        gen = ctx.generator
        model = getattr(gen, "model", None)
        if model is None:                   # a vLLM generator has no HF model to score with
            from repro import models  # noqa: PLC0415

            model, _ = models.load(gen.model_name)
        scores = score_responses(model, gen.tokenizer, items, cache=ctx.cache, identity=gen.identity,
                                 progress=ctx.progress)
        logps = {w: s.to_dict() for w, s in zip(where, scores)}
        ctx.seconds["score"] += time.perf_counter() - t0
    candidates = []
    for ex in ctx.examples:
        cands = ctx.seen.get(ex["id"], {})
        candidates.append({"id": ex["id"], "candidates": {
            s: {"text": c.text, "accepted": c.accepted, "reason": c.reason, "finish_reason": c.finish_reason,
                **({"logp": logps[(ex["id"], s)]} if (ex["id"], s) in logps else {})}
            for s, c in cands.items()}})
    ctx.seconds["total"] = time.perf_counter() - t_start
    summary = {**summarize(method_id, ctx, records, candidates if score else []), **(extra or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out_dir / "targets.jsonl", [r.to_dict() for r in records])
    atomic_write_jsonl(out_dir / "candidates.jsonl", candidates)
    atomic_write_json(out_dir / "targets_summary.json", summary)   # written last: its presence marks completion
    return summary

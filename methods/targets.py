"""Building a method's training targets, and the artefacts that record them.

A method's ``build_targets(ctx)`` asks the context for candidates (the base model's own predictions, its
paraphrases of gold, the gold answers), each judged, and returns the records to train on. Everything the context
generates or judges goes through the cache, so SFT, SSR, S3FT and SDFT on one task share one set of base
predictions, and an interrupted build picks up where it stopped.

Artefacts in the output folder:
  targets.jsonl          the training set: id, prompt (chat messages), target, source in {model, paraphrase, gold}
  candidates.jsonl       every example's candidates with verdicts and log p under the base model (Table 1 / Fig. 2)
  targets_summary.json   counts and shares per source (Table 3), acceptance rates, rejections counted by reason,
                         log-p summary, stage timings, the versions of the checks that decided acceptance

A candidate is accepted only if (in this order; the first failure is its `rejected_by`):
  truncated   it did not stop on the token cap (finish_reason != "length"): a cut-off text is never a target, for any
              method, and no end-of-turn token is ever appended to one (it is not scored either)
  judge       the task's judge accepts it
  filter      (paraphrases) SDFT's banned-phrase filter passes it (evals.judges.filters)
  validity    (paraphrases) the task's validity check passes it (evals.judges.validity: GSM8K keeps the solution's
              intermediate results at a length comparable to gold and is no copy of it; MBPP is a complete function)
"""
from __future__ import annotations

import re
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
from methods.registry import get_method
from repro.runtime.cache import GenerationCache
from repro.runtime.generate import DecodingParams, Generator, hf_model_of, hf_stage
from repro.runtime.store import atomic_write_json, atomic_write_jsonl, read_jsonl

SOURCES = ("model", "paraphrase", "gold")
#: The stages that can reject a candidate, in the order they are applied.
REJECTION_STAGES = ("truncated", "judge", "filter", "validity")
TRUNCATION_RULE = "reject-finish-length-v1"    # part of the target-stage hash, with the filter and validity versions


@dataclass
class Candidate:
    source: str                  # "model" | "paraphrase" | "gold"
    text: str
    accepted: bool               # judged correct, not truncated (and, for paraphrases, clean and valid); gold always
    reason: str                  # the judge's reason when accepted; otherwise why it was rejected
    finish_reason: str | None = None   # "eos" | "stop" | "length" (hit the token cap); None for gold
    verdict: bool | None = None  # the judge's own decision, whatever rejected the candidate afterwards
    rejected_by: str | None = None     # one of REJECTION_STAGES, None when accepted

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


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
    on_detail: Callable[[str], None] | None = None     # progress within the build, e.g. "gold log p 32/374"
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
            cand = Candidate(source, out.text, True, v.reason, out.finish_reason, v.correct)
            if out.finish_reason == "length":
                cand.rejected_by, cand.reason = "truncated", f"truncated at {out.n_output_tokens} tokens"
            elif not v.correct:
                cand.rejected_by = "judge"
            elif source == "paraphrase":
                rejection = paraphrase_rejection(out.text)
                invalid = None if rejection else self.task.paraphrase_invalid(ex, out.text, v)
                if rejection:
                    cand.rejected_by, cand.reason = "filter", f"filtered: {rejection}"
                elif invalid:
                    cand.rejected_by, cand.reason = "validity", f"invalid: {invalid}"
            cand.accepted = cand.rejected_by is None
            self.seen[ex["id"]][source] = cand
            cands.append(cand)
        return cands

    def predictions(self, examples: Sequence[dict]) -> list[Candidate]:
        """The base model's own answers to the training prompts, judged."""
        return self._judged("model", examples, [self.task.predict_messages(ex) for ex in examples],
                            self.predict_params, self.task.predict_tag)

    def paraphrases(self, examples: Sequence[dict]) -> list[Candidate]:
        """The base model's rewrites of the gold answers (question + gold in the prompt), judged and filtered."""
        return self._judged("paraphrase", examples, [self.task.paraphrase_messages(ex) for ex in examples],
                            self.paraphrase_params, self.task.paraphrase_tag)

    def gold(self, ex: dict) -> Candidate:
        cand = Candidate("gold", self.task.gold_response(ex), True, "gold", verdict=True)
        self.seen[ex["id"]]["gold"] = cand
        return cand

    def target(self, ex: dict, cand: Candidate) -> TargetRecord:
        if cand.truncated or not cand.accepted:
            raise ValueError(f"{ex['id']}: a {cand.source} candidate rejected as {cand.rejected_by!r} cannot be a "
                             "training target")
        return TargetRecord(ex["id"], self.task.train_messages(ex), cand.text, cand.source)

    def check_versions(self) -> dict:
        return check_versions(self.task)


def check_versions(task: Task) -> dict:
    """The versions of every rule that decides acceptance: recorded with each build and part of the target-stage
    hash (repro.driver.cell), so changing a rule, a threshold or the paraphrase prompt makes built targets stale."""
    return {"filter": FILTER_VERSION, "validity": task.validity_version, "truncation": TRUNCATION_RULE,
            "paraphrase_prompt": task.paraphrase_tag}


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
            by_stage = Counter(c.rejected_by for c in cands if not c.accepted)
            acceptance[source] = {
                "generated": len(cands), "accepted": sum(c.accepted for c in cands),
                "rate": sum(c.accepted for c in cands) / len(cands),
                "truncated": sum(c.truncated for c in cands),
                "truncated_share": sum(c.truncated for c in cands) / len(cands),
                # what the judge alone would have accepted (the acceptance before the truncation/validity rules)
                "judge_accepted": sum(bool(c.verdict) for c in cands),
                "rejected_by": {k: by_stage.get(k, 0) for k in REJECTION_STAGES},
                "rejections": dict(sorted(Counter(_reason_kind(c.reason) for c in cands
                                                  if not c.accepted).items())),
                "top_rejections": Counter(_reason_kind(c.reason) for c in cands if not c.accepted).most_common(5)}
    logp: dict[str, Any] = {}
    scored = [{s: v for s, v in c["candidates"].items() if "logp" in v} for c in candidates]   # truncated: unscored
    for source in SOURCES:
        logp[source] = _logp_stats([c[source]["logp"] for c in scored if source in c])
        if source != "gold":
            logp[f"{source}_accepted"] = _logp_stats([c[source]["logp"] for c in scored
                                                      if source in c and c[source]["accepted"]])
    by_id = {c["id"]: s for c, s in zip(candidates, scored)}
    target_tokens = [by_id[r.id][r.source]["logp"]["n_tokens"] for r in records
                     if r.source in by_id.get(r.id, {})]
    gold_tokens = [c["gold"]["logp"]["n_tokens"] for c in scored if "gold" in c]
    lengths = {"target_tokens_median": statistics.median(target_tokens) if target_tokens else None,
               "gold_tokens_median": statistics.median(gold_tokens) if gold_tokens else None,
               "target_tokens_total": sum(target_tokens), "n": len(target_tokens),
               "note": "response tokens under the chat template, end-of-turn included"}
    both = [c for c in scored if "model" in c and "gold" in c]
    if both:
        diffs = [c["model"]["logp"]["sum"] - c["gold"]["logp"]["sum"] for c in both]
        logp["model_minus_gold"] = {"n": len(diffs), "mean_sum_diff": statistics.fmean(diffs),
                                    "share_model_higher": sum(d > 0 for d in diffs) / len(diffs)}
    return {
        "method": method_id, "task": ctx.task.describe(), "filter_version": FILTER_VERSION,
        "checks": ctx.check_versions(),
        "n_examples": n, "n_targets": len(records), "dropped": n - len(records),
        "dropped_share": (n - len(records)) / n if n else 0.0,
        "sources": sources, "acceptance": acceptance, "logp": logp, "lengths": lengths,
        "decoding": {"predict": ctx.predict_params.to_dict(), "paraphrase": ctx.paraphrase_params.to_dict()},
        "generator": ctx._generator.describe() if ctx._generator else None,
        "generation_stats": ctx.generation_stats(),
        "seconds": {k: round(v, 3) for k, v in ctx.seconds.items()},
    }


def _reason_kind(reason: str) -> str:
    """Group judge reasons ("12 != gold 18 (answer-is)") into kinds ("!= gold (answer-is)") for the summary."""

    return re.sub(r"'[^']*'|\"[^\"]*\"|-?\d[\d,.]*", "#", reason)[:60]


def build(method_id: str, ctx: TargetContext, out_dir: Path, *, score: bool = True, extra: dict | None = None) -> dict:
    """Run a method's target builder, score every candidate under the base model, write the three artefacts."""

    method = get_method(method_id)
    t_start = time.perf_counter()
    records: list[TargetRecord] = method.build_targets(ctx)
    for r in records:
        if not r.target.strip():
            raise ValueError(f"method {method_id} produced an empty target for {r.id}")
        cand = ctx.seen.get(r.id, {}).get(r.source)
        if cand is not None and (cand.truncated or not cand.accepted):   # a method that bypassed ctx.target
            raise ValueError(f"method {method_id} made a rejected ({cand.rejected_by}) {r.source} candidate the "
                             f"target of {r.id}")
    by_id = {ex["id"]: ex for ex in ctx.examples}
    if score and method.trains:
        for ex in ctx.examples:             # gold log p is the reference every summary compares against
            ctx.seen[ex["id"]].setdefault("gold", Candidate("gold", ctx.task.gold_response(ex), True, "gold",
                                                             verdict=True))
    items, where = [], []
    for ex_id, cands in ctx.seen.items():
        for source, cand in cands.items():
            if cand.truncated:      # scoring appends end-of-turn, which a cut-off text never had: not scored
                continue
            items.append((ctx.task.train_messages(by_id[ex_id]), cand.text))
            where.append((ex_id, source))
    logps: dict[tuple[str, str], dict] = {}
    if score and items:
        # scoring imports torch at module level: loaded only when a method scores its candidates
        from repro.runtime.scoring import score_responses  # noqa: PLC0415

        t0 = time.perf_counter()
        gen = ctx.generator
        with hf_stage():                    # a vLLM engine sleeps while HF scores
            model = hf_model_of(gen)
            scores = score_responses(model, gen.tokenizer, items, cache=ctx.cache, identity=gen.identity,
                                     progress=ctx.progress, on_chunk=None if ctx.on_detail is None else
                                     lambda done, total: ctx.on_detail(f"log p scored {done}/{total}"))
            del model                       # gone before the stage hands its memory back
        logps = {w: s.to_dict() for w, s in zip(where, scores)}
        ctx.seconds["score"] += time.perf_counter() - t0
    candidates = []
    for ex in ctx.examples:
        cands = ctx.seen.get(ex["id"], {})
        candidates.append({"id": ex["id"], "candidates": {
            s: {"text": c.text, "accepted": c.accepted, "reason": c.reason, "finish_reason": c.finish_reason,
                "verdict": c.verdict, "rejected_by": c.rejected_by,
                **({"logp": logps[(ex["id"], s)]} if (ex["id"], s) in logps else {})}
            for s, c in cands.items()}})
    ctx.seconds["total"] = time.perf_counter() - t_start
    summary = {**summarize(method_id, ctx, records, candidates if score else []), **(extra or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out_dir / "targets.jsonl", [r.to_dict() for r in records])
    atomic_write_jsonl(out_dir / "candidates.jsonl", candidates)
    atomic_write_json(out_dir / "targets_summary.json", summary)   # written last: its presence marks completion
    return summary


#: Size budget of one cell's targets audit (gzip JSONL). Estimated for the largest cell the suite runs (paper GSM8K,
#: 7,473 examples x three candidates of ~1 KB, gzip ~4x): ~5 MiB. mini cells measure 10-40 KB.
AUDIT_BUDGET_BYTES = 8 * 1024 * 1024


def audit_records(targets_dir: Path) -> list[dict]:
    """One record per training example: which candidate became its target (or none: self_only drops examples), and
    every candidate's text, judge verdict, acceptance, reason, rejecting stage and finish reason - enough to check
    Table 3 and each target without rerunning. Joined from a build's targets.jsonl and candidates.jsonl."""

    targets = {r["id"]: r for r in read_jsonl(targets_dir / "targets.jsonl")}
    out = []
    for c in read_jsonl(targets_dir / "candidates.jsonl"):
        t = targets.get(c["id"])
        out.append({"id": c["id"], "target_source": t["source"] if t else None,
                    "target": t["target"] if t and t["source"] not in c["candidates"] else None,
                    "candidates": {s: {k: v.get(k) for k in ("text", "verdict", "accepted", "reason", "rejected_by",
                                                             "finish_reason")}
                                   for s, v in c["candidates"].items()}})
    return out

"""In-domain and cross-task accuracy: a model (base, or base + adapter) answers a task's test prompts through the
generation interface and the task's judge decides. The cross-task matrix is this, for every task of a preset."""
from __future__ import annotations

import time
from collections.abc import Sequence

from evals.judges.cached import judge_cached
from evals.judges.text import READING_METRICS_VERSION
from evals.stats import accuracy_summary
from evals.tasks.base import Task
from repro.runtime.cache import GenerationCache
from repro.runtime.generate import DecodingParams, Generator


def item_extras(task: Task, ex: dict, response: str) -> dict:
    """What a per-item record carries beside the verdict: the task's own metrics and the item's cluster."""
    extra: dict = dict(task.item_metrics(ex, response))
    cluster = task.cluster(ex)
    if cluster is not None:
        extra["cluster"] = cluster
    return extra


def summarise_reading(items: Sequence[dict]) -> dict | None:
    """Cell-level reading metrics (points in [0, 1], words) from per-item records; None for non-reading tasks."""

    if not items or "f1" not in items[0]:
        return None
    n = len(items)
    mean = lambda k: sum(float(it[k]) for it in items) / n   # noqa: E731
    return {"em": mean("em"), "f1": mean("f1"), "containment": mean("contains"),
            "answer_words": mean("answer_words"), "n": n, "version": READING_METRICS_VERSION}


def evaluate_task(task: Task, examples: Sequence[dict], generator: Generator, params: DecodingParams, *,
                  cache: GenerationCache | None = None, progress: bool = True, seed: int = 0) -> dict:
    """Accuracy of `generator` on `examples`, with stderr, a bootstrap CI and per-item verdicts."""
    t0 = time.perf_counter()
    outs = generator.generate([task.predict_messages(ex) for ex in examples], params, tag=task.predict_tag,
                              progress=progress)
    t1 = time.perf_counter()
    verdicts = judge_cached(task, examples, [o.text for o in outs], cache, progress=progress)
    t2 = time.perf_counter()
    summary = accuracy_summary([v.correct for v in verdicts], seed=seed)
    items = [{"id": ex["id"], "response": o.text, "correct": v.correct, "reason": v.reason,
              "finish_reason": o.finish_reason, "n_output_tokens": o.n_output_tokens,
              **item_extras(task, ex, o.text)}
             for ex, o, v in zip(examples, outs, verdicts)]
    reading = summarise_reading(items)
    return {"task": task.describe(), "acc,none": summary["acc"], "acc_stderr,none": summary["acc_stderr"],
            "ci95": summary["ci95"], "n": summary["n"], **({"reading": reading} if reading else {}),
            "decoding": params.to_dict(),
            "truncated": sum(o.finish_reason == "length" for o in outs),
            "seconds": {"generate": round(t1 - t0, 3), "judge": round(t2 - t1, 3)}, "items": items}
